//! Pure text editors for the host's boot and platform configuration: strings in, strings out,
//! no I/O. The apply step wraps each in a read-modify-write of the file.

pub mod grub_default;
pub mod hostconf;
pub mod kargs;
pub mod kernel_cmdline_file;
