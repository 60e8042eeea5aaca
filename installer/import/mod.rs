//! Pure parsers for what operators set up by hand before vgpuctl: `/etc/rc.local` lines and
//! mdevctl definitions. `vgpuctl import` turns their output into saved vGPUs.

pub mod mdevctl;
pub mod rc_rewrite;
pub mod rclocal;
pub mod vendor_vfio;
