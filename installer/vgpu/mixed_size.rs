//! Mixed-size (heterogeneous) mode's command (recorded-behaviour.md §4).

/// The command that turns the mode on for one GPU, named by its PCI address (nvidia-smi's `-i`
/// takes an index, a UUID or a PCI bus id; the address cannot name another GPU).
pub fn command(gpu: &str) -> crate::host::Cmd {
    crate::host::Cmd::new("nvidia-smi")
        .arg("vgpu")
        .arg("-i")
        .arg(gpu)
        .arg("-shm")
        .arg("1")
}
