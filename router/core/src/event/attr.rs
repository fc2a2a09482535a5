//! Attribute names, values and the lookup trait that filters and CESQL evaluate against.

use std::fmt;

/// The value of one context attribute or extension, borrowed from the event.
///
/// CloudEvents has more types (URI, Timestamp, Binary, …) but all of them travel as strings;
/// only extension values read from JSON can be integers or booleans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrValue<'a> {
    /// A string, URI, URI-reference or timestamp, as it appeared on the wire (decoded).
    Str(&'a str),
    /// A 32-bit signed integer (CloudEvents `Integer`).
    Int(i32),
    /// A boolean.
    Bool(bool),
}

impl<'a> AttrValue<'a> {
    /// The string value, if this is a string.
    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            AttrValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Calls `f` with the canonical string form (CloudEvents "Type System": `true`/`false`,
    /// decimal integers) without allocating.
    pub fn with_canonical_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            AttrValue::Str(s) => f(s),
            AttrValue::Bool(true) => f("true"),
            AttrValue::Bool(false) => f("false"),
            AttrValue::Int(i) => {
                let mut buf = itoa::Buffer::new();
                f(buf.format(*i))
            }
        }
    }
}

impl fmt::Display for AttrValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Str(s) => f.write_str(s),
            AttrValue::Int(i) => write!(f, "{i}"),
            AttrValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Anything whose CloudEvents attributes can be looked up by name.
///
/// Implemented by [`super::EventView`]; tests implement it over plain maps. Names are the
/// lower-case attribute names of the spec (`type`, `source`, an extension's name).
pub trait Attributes {
    /// Returns the attribute's value, or `None` when the event does not have it.
    fn attribute(&self, name: &str) -> Option<AttrValue<'_>>;
}

/// The context attributes defined by the spec, which every view stores in a fixed slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum KnownAttr {
    /// `specversion`
    SpecVersion = 0,
    /// `id`
    Id = 1,
    /// `source`
    Source = 2,
    /// `type`
    Type = 3,
    /// `subject`
    Subject = 4,
    /// `time`
    Time = 5,
    /// `datacontenttype`
    DataContentType = 6,
    /// `dataschema` (`schemaurl` in spec version 0.3)
    DataSchema = 7,
}

impl KnownAttr {
    /// Number of known attributes; the size of a view's slot array.
    pub const COUNT: usize = 8;

    /// All known attributes, in slot order.
    pub const ALL: [KnownAttr; Self::COUNT] = [
        KnownAttr::SpecVersion,
        KnownAttr::Id,
        KnownAttr::Source,
        KnownAttr::Type,
        KnownAttr::Subject,
        KnownAttr::Time,
        KnownAttr::DataContentType,
        KnownAttr::DataSchema,
    ];

    /// The attribute's name in spec version 1.0.
    pub const fn name(self) -> &'static str {
        match self {
            KnownAttr::SpecVersion => "specversion",
            KnownAttr::Id => "id",
            KnownAttr::Source => "source",
            KnownAttr::Type => "type",
            KnownAttr::Subject => "subject",
            KnownAttr::Time => "time",
            KnownAttr::DataContentType => "datacontenttype",
            KnownAttr::DataSchema => "dataschema",
        }
    }

    /// The attribute's name in the given spec version (`schemaurl` for 0.3's `dataschema`).
    pub const fn name_in(self, version: SpecVersion) -> &'static str {
        match (self, version) {
            (KnownAttr::DataSchema, SpecVersion::V03) => "schemaurl",
            _ => self.name(),
        }
    }

    /// Looks a 1.0 attribute name up. Extensions return `None`.
    #[inline]
    pub fn from_name(name: &str) -> Option<KnownAttr> {
        Some(match name {
            "specversion" => KnownAttr::SpecVersion,
            "id" => KnownAttr::Id,
            "source" => KnownAttr::Source,
            "type" => KnownAttr::Type,
            "subject" => KnownAttr::Subject,
            "time" => KnownAttr::Time,
            "datacontenttype" => KnownAttr::DataContentType,
            "dataschema" => KnownAttr::DataSchema,
            _ => return None,
        })
    }

    /// Looks an attribute name up as spec version `version` spells it.
    #[inline]
    pub fn from_name_in(name: &str, version: SpecVersion) -> Option<KnownAttr> {
        match (name, version) {
            ("schemaurl", SpecVersion::V03) => Some(KnownAttr::DataSchema),
            ("dataschema", SpecVersion::V03) => None,
            _ => Self::from_name(name),
        }
    }

    /// Whether the spec requires the attribute.
    pub const fn is_required(self) -> bool {
        matches!(
            self,
            KnownAttr::SpecVersion | KnownAttr::Id | KnownAttr::Source | KnownAttr::Type
        )
    }
}

/// The CloudEvents spec versions we read and write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SpecVersion {
    /// 1.0 (1.0.2, and the 1.0.3 work in progress).
    #[default]
    V10,
    /// 0.3, read and written for older senders.
    V03,
}

impl SpecVersion {
    /// The version string as it appears in `specversion`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SpecVersion::V10 => "1.0",
            SpecVersion::V03 => "0.3",
        }
    }

    /// Parses a `specversion` value.
    pub fn parse(s: &str) -> Option<SpecVersion> {
        match s {
            "1.0" => Some(SpecVersion::V10),
            "0.3" => Some(SpecVersion::V03),
            _ => None,
        }
    }
}

/// Whether `name` is a valid attribute name: one or more of `[a-z0-9]` (spec "Naming
/// Conventions"). The spec only recommends starting with a letter, so digits first are allowed.
pub fn is_valid_attribute_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_strings() {
        assert_eq!(AttrValue::Int(-42).with_canonical_str(str::to_owned), "-42");
        assert_eq!(
            AttrValue::Bool(true).with_canonical_str(str::to_owned),
            "true"
        );
        assert_eq!(AttrValue::Str("x").with_canonical_str(str::to_owned), "x");
    }

    #[test]
    fn names() {
        for k in KnownAttr::ALL {
            assert_eq!(KnownAttr::from_name(k.name()), Some(k));
        }
        assert_eq!(
            KnownAttr::from_name_in("schemaurl", SpecVersion::V03),
            Some(KnownAttr::DataSchema)
        );
        assert_eq!(
            KnownAttr::from_name_in("dataschema", SpecVersion::V03),
            None
        );
        assert!(is_valid_attribute_name(b"abc1"));
        assert!(is_valid_attribute_name(b"1abc"));
        assert!(!is_valid_attribute_name(b""));
        assert!(!is_valid_attribute_name(b"aBc"));
        assert!(!is_valid_attribute_name(b"a_b"));
    }
}
