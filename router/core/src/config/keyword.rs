//! Enumerations written as lowercase words in YAML (`linear`, `ordered`, `json`).

/// Declares a fieldless enum read from and written as fixed strings, with
/// `NAMES`, `as_str`, `from_name`, `Display`, `Deserialize` and `Serialize`.
///
/// An unknown word fails with serde's `unknown_variant` error, which the loader turns into
/// an "unknown value" error with a suggestion.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$variant_meta])* $variant, )+
        }

        impl $name {
            /// Every value, as written in YAML.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The value as written in YAML.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            /// The value written `text` in YAML, if there is one.
            pub fn from_name(text: &str) -> Option<$name> {
                match text {
                    $( $text => Some($name::$variant), )+
                    _ => None,
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<$name, D::Error> {
                let text = <::std::borrow::Cow<'de, str> as ::serde::Deserialize>::deserialize(deserializer)?;
                $name::from_name(&text)
                    .ok_or_else(|| ::serde::de::Error::unknown_variant(&text, $name::NAMES))
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
    };
}
