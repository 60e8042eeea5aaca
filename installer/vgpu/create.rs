//! Creating one vGPU and checking that it really exists, on either kernel interface.

use anyhow::{bail, Context, Result};

use crate::facts::vgpus::{mdev_types_dir, read_mdev_types, vendor_dir, MDEV_DEVICES};
use crate::facts::Interface;
use crate::host::Host;
use crate::vgpu_name;

use super::place::Create;

/// The type directory on `parent` whose `name` is `type_name` (never matched by directory prefix:
/// the seed saw `vfio-pci-575` where `nvidia-575` was expected); else `type_id` if it exists.
pub fn mdev_type_dir(host: &Host, parent: &str, type_name: &str, type_id: &str) -> Option<String> {
    let dir = mdev_types_dir(host, parent)?;
    let types = read_mdev_types(host, &dir);
    let t = types
        .iter()
        .find(|t| !type_name.is_empty() && vgpu_name::same(&t.name, type_name))
        .or_else(|| types.iter().find(|t| t.id == type_id))?;
    Some(format!("{dir}/{}", t.id))
}

/// The type directories one GPU's parents were found to use for a type, so that each further
/// parent costs a read of one `name` file instead of a read of every type directory (an A40 VF
/// lists dozens). Remembered per type; several names because a GPU's VFs do not all name their
/// directories alike (the seed's slot-04 VFs say `vfio-pci-<id>`, the others `nvidia-<id>`). A
/// directory is only used when its `name` still says the type, so a listing that changed since
/// is found again by a full read ([`mdev_type_dir`]).
#[derive(Default)]
pub struct TypeDirs {
    known: Vec<((String, String), Vec<String>)>,
}

impl TypeDirs {
    /// The type directory on `parent` for the type, as [`mdev_type_dir`] would find it.
    pub fn find(
        &mut self,
        host: &Host,
        parent: &str,
        type_name: &str,
        type_id: &str,
    ) -> Option<String> {
        let dir = mdev_types_dir(host, parent)?;
        let key = (type_name.to_string(), type_id.to_string());
        let slot = match self.known.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                self.known.push((key, Vec::new()));
                self.known.len() - 1
            }
        };
        if !type_name.is_empty() {
            for id in &self.known[slot].1 {
                let named = host.read_trim(&format!("{dir}/{id}/name"));
                if named.is_some_and(|n| vgpu_name::same(&n, type_name)) {
                    return Some(format!("{dir}/{id}"));
                }
            }
        }
        let found = mdev_type_dir(host, parent, type_name, type_id)?;
        let id = found.rsplit('/').next().unwrap_or_default().to_string();
        let named = host.read_trim(&format!("{found}/name"));
        if named.is_some_and(|n| vgpu_name::same(&n, type_name))
            && !self.known[slot].1.contains(&id)
        {
            self.known[slot].1.push(id);
        }
        Some(found)
    }
}

/// Is the mdev `uuid` present, and with which type name?
pub fn mdev_type_of(host: &Host, uuid: &str) -> Option<String> {
    let base = format!("{MDEV_DEVICES}/{uuid}");
    if !host.exists(&base) {
        return None;
    }
    Some(
        host.read_trim(&format!("{base}/mdev_type/name"))
            .or_else(|| host.link_name(&format!("{base}/mdev_type")))
            .unwrap_or_default(),
    )
}

/// The type id set on a vendor-VFIO VF (None when free or not a vendor-VFIO VF).
pub fn vendor_current(host: &Host, vf: &str) -> Option<String> {
    host.read_trim(&format!("{}/current_vgpu_type", vendor_dir(vf)))
        .filter(|s| s != "0" && !s.is_empty())
}

pub fn create(host: &Host, c: &Create) -> Result<()> {
    create_with(host, c, &mut TypeDirs::default())
}

/// [`create`], finding the mdev type directory through `dirs` (kept per GPU by the caller). When
/// the write fails and a fresh read of the listing finds another directory for the type (the
/// listing changed), it is tried once more there.
pub fn create_with(host: &Host, c: &Create, dirs: &mut TypeDirs) -> Result<()> {
    crate::fault::point("vgpu-create");
    match c.interface {
        Interface::Mdev => {
            let missing = || {
                format!(
                    "{} offers no type {} (mdev_supported_types)",
                    c.parent, c.type_name
                )
            };
            let mut dir = dirs
                .find(host, &c.parent, &c.type_name, &c.type_id)
                .with_context(missing)?;
            let mut written = host.write_attr(&format!("{dir}/create"), &c.uuid);
            if written.is_err() {
                let again = mdev_type_dir(host, &c.parent, &c.type_name, &c.type_id);
                if let Some(other) = again.filter(|d| *d != dir) {
                    dir = other;
                    written = host.write_attr(&format!("{dir}/create"), &c.uuid);
                }
            }
            written.with_context(|| {
                format!("creating vGPU {} ({}) on {}", c.uuid, c.type_name, c.parent)
            })?;
            match mdev_type_of(host, &c.uuid) {
                // The device's `mdev_type` link names the directory whose `create` was written:
                // that is its type, even when the directory's `name` cannot be read just then.
                Some(name)
                    if name_matches(&name, &c.type_name) || dir.ends_with(&format!("/{name}")) =>
                {
                    Ok(())
                }
                Some(name) => bail!(
                    "vGPU {} appeared with type {name}, not {}",
                    c.uuid,
                    c.type_name
                ),
                None => bail!(
                    "wrote {} to {dir}/create but /sys/bus/mdev/devices/{} did not appear",
                    c.uuid,
                    c.uuid
                ),
            }
        }
        Interface::VendorVfio => {
            let path = format!("{}/current_vgpu_type", vendor_dir(&c.parent));
            host.write_attr(&path, &c.type_id).with_context(|| {
                format!(
                    "setting vGPU type {} ({}) on VF {}",
                    c.type_id, c.type_name, c.parent
                )
            })?;
            match vendor_current(host, &c.parent) {
                Some(id) if id == c.type_id => Ok(()),
                other => bail!(
                    "VF {} reads current_vgpu_type {} after writing {}",
                    c.parent,
                    other.unwrap_or_else(|| "0".into()),
                    c.type_id
                ),
            }
        }
        Interface::None => bail!("{} exposes no vGPU interface", c.parent),
    }
}

/// Type names compare without the vendor prefix; a generic mdev type may only have its dir name.
pub fn name_matches(actual: &str, wanted: &str) -> bool {
    vgpu_name::same(actual, wanted) || actual == wanted
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    struct NoKernel;
    impl crate::host::Kernel for NoKernel {
        fn reach(&self, _: &std::path::Path) -> crate::host::Reach {
            crate::host::Reach::Offline
        }
        fn write_attr(
            &self,
            _: &std::path::Path,
            _: &std::path::Path,
            _: &str,
        ) -> std::io::Result<()> {
            unreachable!()
        }
        fn run(&self, _: &Host, _: &crate::host::Cmd) -> anyhow::Result<crate::host::RunOutput> {
            unreachable!()
        }
    }

    fn type_dir(root: &std::path::Path, parent: &str, dir: &str, name: &str) {
        let d = root.join(format!(
            "sys/class/mdev_bus/{parent}/mdev_supported_types/{dir}"
        ));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
        std::fs::write(d.join("available_instances"), "1\n").unwrap();
    }

    /// The cache finds what a full read finds: on VFs that name their directories alike, on a
    /// VF that names them otherwise (the seed's slot-04 `vfio-pci-<id>`), and after a listing
    /// changed under it (the remembered directory now holds another type).
    #[test]
    fn type_dirs_find_what_a_full_read_finds() {
        let d = tempfile::tempdir().unwrap();
        let h = Host::new(d.path(), Arc::new(NoKernel));
        for vf in ["0000:e8:00.4", "0000:e8:00.5"] {
            type_dir(d.path(), vf, "nvidia-555", "NVIDIA A40-1B");
            type_dir(d.path(), vf, "nvidia-556", "NVIDIA A40-2B");
        }
        type_dir(d.path(), "0000:e8:04.0", "vfio-pci-555", "NVIDIA A40-1B");
        type_dir(d.path(), "0000:e8:04.0", "vfio-pci-556", "NVIDIA A40-2B");
        let mut dirs = TypeDirs::default();
        let find = |dirs: &mut TypeDirs, vf: &str| dirs.find(&h, vf, "A40-1B", "nvidia-555");
        for vf in [
            "0000:e8:00.4",
            "0000:e8:00.5",
            "0000:e8:04.0",
            "0000:e8:00.4",
        ] {
            assert_eq!(
                find(&mut dirs, vf),
                mdev_type_dir(&h, vf, "A40-1B", "nvidia-555"),
                "{vf}"
            );
        }
        // The listing changes: nvidia-555 is now another type, the wanted one moved.
        type_dir(d.path(), "0000:e8:00.5", "nvidia-555", "NVIDIA A40-48Q");
        type_dir(d.path(), "0000:e8:00.5", "nvidia-600", "NVIDIA A40-1B");
        assert_eq!(
            find(&mut dirs, "0000:e8:00.5").as_deref(),
            Some("sys/class/mdev_bus/0000:e8:00.5/mdev_supported_types/nvidia-600")
        );
        assert_eq!(find(&mut dirs, "0000:e8:00.9"), None);
    }
}
