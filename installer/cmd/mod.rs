//! One module per command: each turns arguments into calls on the library and prints.
pub mod check;
pub mod driver;
pub mod export;
pub mod import;
pub mod inspect;
pub mod restore;
pub mod setup;
pub mod uninstall;
