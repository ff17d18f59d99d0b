//! The macro that turns the key table (keys.rs) into the section structs,
//! their defaults, the key descriptors the readers and the validation
//! share, and the key list in [`Config`](super::Config)'s documentation,
//! so that a key cannot exist in one of them and not in the others.

use super::parse::Raw;
use super::Config;

/// One key: where it lives, how a raw value sets it, how it is checked.
pub(super) struct Key {
    /// The section, `""` for a top-level key.
    pub(super) section: &'static str,
    /// The key within its section.
    pub(super) name: &'static str,
    /// Parses a raw value into the field.
    pub(super) set: fn(&mut Config, &Raw<'_>) -> Result<(), String>,
    /// Checks the field, which may depend on other fields.
    pub(super) check: fn(&Config) -> Result<(), String>,
}

impl Key {
    /// `section.key`, or `key` at the top level: the name errors carry.
    pub(super) fn path(&self) -> String {
        if self.section.is_empty() {
            self.name.to_owned()
        } else {
            format!("{}.{}", self.section, self.name)
        }
    }

    /// The environment variable: `SEEDCORE_SECTION_KEY`.
    pub(super) fn env(&self) -> String {
        format!("SEEDCORE_{}", self.path().replace('.', "_")).to_ascii_uppercase()
    }
}

/// Defines [`Config`], its section structs and `KEYS` from one table.
///
/// Each key reads `name: Type = default_expr; type "kind", default
/// "default as text", parse |raw| ..., check fn;` after its doc comment:
/// `parse` turns a [`Raw`] into `Type`, `check` (a
/// `fn(&Type, &Config) -> Result<(), String>`) validates it.
macro_rules! config_keys {
    (
        $(#[doc = $cdoc:literal])*
        top {
            $(
                $(#[doc = $tdoc:literal])+
                $tkey:ident: $tty:ty = $tdef:expr;
                type $tkind:literal, default $tdefdoc:literal,
                parse $tparse:expr, check $tcheck:expr;
                $(builder $tsetter:ident $(($targ:ty) => $tconv:expr)?;)?
            )*
        }
        $(
            $(#[doc = $sdoc:literal])+
            [$sname:literal] $sfield:ident: $sty:ident {
                $(
                    $(#[doc = $kdoc:literal])+
                    $key:ident: $kty:ty = $kdef:expr;
                    type $kkind:literal, default $kdefdoc:literal,
                    parse $kparse:expr, check $kcheck:expr;
                    $(builder $setter:ident $(($arg:ty) => $conv:expr)?;)?
                )*
            }
        )*
    ) => {
        $(#[doc = $cdoc])*
        #[doc = ""]
        #[doc = "# Keys"]
        #[doc = ""]
        #[doc = "Top level:"]
        #[doc = ""]
        $(
            #[doc = concat!(
                "- `", stringify!($tkey), "` (", $tkind, "; default ", $tdefdoc, "):",
                $($tdoc),+
            )]
        )*
        $(
            #[doc = ""]
            #[doc = concat!("`[", $sname, "]`:")]
            #[doc = ""]
            $(
                #[doc = concat!(
                    "- `", $sname, ".", stringify!($key), "` (", $kkind, "; default ",
                    $kdefdoc, "):", $($kdoc),+
                )]
            )*
        )*
        #[derive(Debug, Clone)]
        #[non_exhaustive]
        pub struct Config {
            $(
                $(#[doc = $tdoc])+
                #[doc = ""]
                #[doc = concat!(
                    "Key `", stringify!($tkey), "` (", $tkind, "); default ", $tdefdoc, "."
                )]
                pub $tkey: $tty,
            )*
            $(
                $(#[doc = $sdoc])+
                pub $sfield: $sty,
            )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config {
                    $($tkey: $tdef,)*
                    $($sfield: $sty::default(),)*
                }
            }
        }

        $(
            $(#[doc = $sdoc])+
            #[doc = ""]
            #[doc = concat!(
                "The `[", $sname, "]` section of [`Config`]; environment variables `SEEDCORE_",
                $sname, "_*` (upper-cased)."
            )]
            #[derive(Debug, Clone)]
            #[non_exhaustive]
            pub struct $sty {
                $(
                    $(#[doc = $kdoc])+
                    #[doc = ""]
                    #[doc = concat!(
                        "Key `", $sname, ".", stringify!($key), "` (", $kkind, "); default ",
                        $kdefdoc, "."
                    )]
                    pub $key: $kty,
                )*
            }

            impl Default for $sty {
                fn default() -> Self {
                    $sty {
                        $($key: $kdef,)*
                    }
                }
            }
        )*

        /// The names of the sections.
        pub(super) const SECTIONS: &[&str] = &[$($sname),*];

        /// Every key, in the order validation checks them.
        pub(super) const KEYS: &[Key] = &[
            $(
                Key {
                    section: "",
                    name: stringify!($tkey),
                    set: |c, raw| {
                        let parse: fn(&Raw<'_>) -> Result<$tty, String> = $tparse;
                        c.$tkey = parse(raw)?;
                        Ok(())
                    },
                    check: |c| {
                        let check: fn(&$tty, &Config) -> Result<(), String> = $tcheck;
                        check(&c.$tkey, c)
                    },
                },
            )*
            $(
                $(
                    Key {
                        section: $sname,
                        name: stringify!($key),
                        set: |c, raw| {
                            let parse: fn(&Raw<'_>) -> Result<$kty, String> = $kparse;
                            c.$sfield.$key = parse(raw)?;
                            Ok(())
                        },
                        check: |c| {
                            let check: fn(&$kty, &Config) -> Result<(), String> = $kcheck;
                            check(&c.$sfield.$key, c)
                        },
                    },
                )*
            )*
        ];

        /// The builder's setters of the keys that name one (`builder`),
        /// as methods of the impl block that invokes it (its type has
        /// `config_mut`).
        macro_rules! builder_setters {
            () => {
                $(
                    $crate::config::builder_setter! {
                        [$($tsetter $(, $targ => $tconv)?)?]
                        $(#[doc = $tdoc])+
                        #[doc = ""]
                        #[doc = concat!("Key `", stringify!($tkey), "`.")]
                        $tkey: $tty
                    }
                )*
                $($(
                    $crate::config::builder_setter! {
                        [$($setter $(, $arg => $conv)?)?]
                        $(#[doc = $kdoc])+
                        #[doc = ""]
                        #[doc = concat!("Key `", $sname, ".", stringify!($key), "`.")]
                        $sfield.$key: $kty
                    }
                )*)*
            };
        }
    };
}

/// One setter of the builder, from a key of the table: none for a key
/// that names no setter; else it sets the field to its argument, or to
/// `conv(argument)`.
macro_rules! builder_setter {
    ([] $($key:tt)*) => {};
    ([$setter:ident, $arg:ty => $conv:expr] $(#[$m:meta])* $($field:ident).+: $kty:ty) => {
        $(#[$m])*
        pub fn $setter(mut self, value: $arg) -> Self {
            self.config_mut().$($field).+ = ($conv)(value);
            self
        }
    };
    ([$setter:ident] $(#[$m:meta])* $($field:ident).+: $kty:ty) => {
        $(#[$m])*
        pub fn $setter(mut self, value: $kty) -> Self {
            self.config_mut().$($field).+ = value;
            self
        }
    };
}

pub(crate) use builder_setter;
pub(super) use config_keys;
