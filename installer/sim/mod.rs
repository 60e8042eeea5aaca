//! The simulated host: a directory laid out like a real Linux root plus a kernel that plays the
//! kernel and the NVIDIA stack behind the same I/O layer as a real host.

pub mod driver_pkg;
