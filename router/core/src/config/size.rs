//! Byte sizes in config files: `256KiB`, `64MiB`, `1000000`.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of bytes, written as a plain integer or an integer with a unit.
///
/// Units: `B`; binary `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024, also written the Kubernetes
/// way: `Ki`, `Mi`, `Gi`, `Ti`); decimal `KB`, `MB`, `GB`, `TB` (powers of 1000, also `k`,
/// `M`, `G`, `T` as in Kubernetes quantities). Units are case-sensitive, because `M` and `m`
/// mean different things in Kubernetes. A space between number and unit is allowed.
///
/// `Display` writes the largest binary unit that divides the value exactly (`256KiB`), or
/// plain bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(u64);

/// Why a value is not a byte size.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ByteSizeError {
    /// No digits.
    #[error("{0:?} is not a size; write bytes or a number with a unit, e.g. 256KiB or 1MiB")]
    NotANumber(String),
    /// A unit that is not in the list.
    #[error(
        "unknown size unit {0:?}; use B, KiB, MiB, GiB, TiB (or Ki, Mi, Gi, Ti), or KB, MB, GB, TB"
    )]
    UnknownUnit(String),
    /// More than `u64::MAX` bytes.
    #[error("size is too large")]
    Overflow,
}

const UNITS: [(&str, u64); 17] = [
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
];

impl ByteSize {
    /// A size in bytes.
    pub const fn b(bytes: u64) -> ByteSize {
        ByteSize(bytes)
    }

    /// A size in KiB.
    pub const fn kib(kib: u64) -> ByteSize {
        ByteSize(kib << 10)
    }

    /// A size in MiB.
    pub const fn mib(mib: u64) -> ByteSize {
        ByteSize(mib << 20)
    }

    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// The number of bytes as `usize`, saturating on 32-bit targets.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    /// Parses the form described on [`ByteSize`].
    pub fn parse(text: &str) -> Result<ByteSize, ByteSizeError> {
        let text = text.trim();
        let digits_end = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(digits_end);
        if digits.is_empty() {
            return Err(ByteSizeError::NotANumber(text.to_owned()));
        }
        let number: u64 = digits.parse().map_err(|_| ByteSizeError::Overflow)?;
        let unit = unit.trim_start();
        let multiplier = if unit.is_empty() {
            1
        } else {
            UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|&(_, multiplier)| multiplier)
                .ok_or_else(|| ByteSizeError::UnknownUnit(unit.to_owned()))?
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or(ByteSizeError::Overflow)
    }
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(text: &str) -> Result<ByteSize, ByteSizeError> {
        ByteSize::parse(text)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, multiplier) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if self.0 >= multiplier && self.0.is_multiple_of(multiplier) {
                return write!(f, "{}{unit}", self.0 / multiplier);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ByteSize, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes, or a number with a unit such as 256KiB")
            }

            fn visit_u64<E: de::Error>(self, bytes: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(bytes))
            }

            fn visit_i64<E: de::Error>(self, bytes: i64) -> Result<ByteSize, E> {
                u64::try_from(bytes)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<ByteSize, E> {
                ByteSize::parse(text).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(SizeVisitor)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_units() {
        for (text, bytes) in [
            ("0", 0),
            ("1024", 1024),
            ("256KiB", 256 * 1024),
            ("1MiB", 1 << 20),
            ("1 MiB", 1 << 20),
            (" 2GiB ", 2 << 30),
            ("1TiB", 1 << 40),
            ("64Mi", 64 << 20),
            ("10KB", 10_000),
            ("10k", 10_000),
            ("3M", 3_000_000),
            ("5B", 5),
        ] {
            assert_eq!(ByteSize::parse(text), Ok(ByteSize(bytes)), "{text}");
        }
    }

    #[test]
    fn rejects_bad_sizes() {
        assert_eq!(
            ByteSize::parse("KiB"),
            Err(ByteSizeError::NotANumber("KiB".into()))
        );
        assert_eq!(
            ByteSize::parse("10kib"),
            Err(ByteSizeError::UnknownUnit("kib".into()))
        );
        assert_eq!(
            ByteSize::parse("1.5MiB"),
            Err(ByteSizeError::UnknownUnit(".5MiB".into()))
        );
        assert_eq!(
            ByteSize::parse("-1"),
            Err(ByteSizeError::NotANumber("-1".into()))
        );
        assert_eq!(
            ByteSize::parse("99999999999TiB"),
            Err(ByteSizeError::Overflow)
        );
        assert_eq!(
            ByteSize::parse("99999999999999999999"),
            Err(ByteSizeError::Overflow)
        );
    }

    #[test]
    fn deserializes_integers_and_strings() {
        let size: ByteSize = serde_norway::from_str("262144").unwrap();
        assert_eq!(size, ByteSize::kib(256));
        let size: ByteSize = serde_norway::from_str("\"1MiB\"").unwrap();
        assert_eq!(size, ByteSize::mib(1));
        let size: ByteSize = serde_norway::from_str("1MiB").unwrap();
        assert_eq!(size, ByteSize::mib(1));
        assert!(serde_norway::from_str::<ByteSize>("-5").is_err());
        assert!(serde_norway::from_str::<ByteSize>("[1]").is_err());
    }

    #[test]
    fn displays_largest_exact_unit() {
        assert_eq!(ByteSize::kib(256).to_string(), "256KiB");
        assert_eq!(ByteSize::mib(1024).to_string(), "1GiB");
        assert_eq!(ByteSize::b(1000).to_string(), "1000");
        assert_eq!(ByteSize::b(0).to_string(), "0");
    }

    proptest! {
        #[test]
        fn display_round_trips(bytes in any::<u64>()) {
            prop_assert_eq!(ByteSize::parse(&ByteSize(bytes).to_string()), Ok(ByteSize(bytes)));
        }
    }
}
