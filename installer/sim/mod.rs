//! Temporary stand-in until the `sim` branch lands.
pub mod driver_pkg;
use std::path::Path;
pub fn detect(_root: &Path) -> Option<String> {
    None
}
pub fn open(_root: &Path, model: &str, _opts: &[String]) -> anyhow::Result<crate::host::Host> {
    anyhow::bail!("simulator {model} not built in")
}
pub fn reboot(_h: &crate::host::Host, _r: &[String]) -> anyhow::Result<String> {
    anyhow::bail!("no simulator")
}
pub fn info(_h: &crate::host::Host) -> anyhow::Result<String> {
    anyhow::bail!("no simulator")
}
