//! [`SimKernel`]: answers sysfs writes as the kernel and the NVIDIA driver would.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::Result;

use super::layout::{self, devdir, pf_of};
use super::models::{Iface, Model};
use super::state::{self, Event, Pending, State, Vgpu};
use crate::seam::{Cmd, RunOutput};

pub struct SimKernel {
    pub(crate) root: PathBuf,
    pub(crate) model: &'static Model,
    inner: Mutex<Inner>,
    /// Set (and notified) when this process scheduled an event, to wake the clock thread.
    wake: (Mutex<bool>, Condvar),
}

struct Inner {
    st: State,
    stamp: Option<String>,
}

fn errno(code: i32, why: &str) -> io::Error {
    tracing::debug!(errno = code, why, "simulated sysfs write refused");
    io::Error::from_raw_os_error(code)
}

fn to_io(e: anyhow::Error) -> io::Error {
    io::Error::other(format!("{e:#}"))
}

use nix::libc;

impl SimKernel {
    /// Load the kernel of a simulated root and start its clock.
    pub fn load(root: &Path, model: &'static Model) -> Result<Arc<SimKernel>> {
        // The state and its save token are read together under the lock: read apart, another
        // process's save could fall between them, and this kernel would pair the old state
        // with the new token, trust it, and later save it over the change it never saw.
        let (st, stamp) = {
            let _held = state::lock(root);
            (state::load(root)?, state::stamp(root))
        };
        let k = Arc::new(SimKernel {
            root: root.to_path_buf(),
            model,
            inner: Mutex::new(Inner { st, stamp }),
            wake: (Mutex::new(false), Condvar::new()),
        });
        k.start_clock();
        Ok(k)
    }

    /// Run `f` on the current state (reloaded when another process changed it) and save it
    /// when it changed. Never sleep inside.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut State) -> io::Result<R>) -> io::Result<R> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let lock = state::lock(&self.root);
        let now = state::stamp(&self.root);
        if now != inner.stamp {
            // Another process saved: its state, or no change at all (saving a state this
            // kernel knows to be stale would undo the other's change).
            inner.st = state::load(&self.root).map_err(to_io)?;
            inner.stamp = now;
        }
        let before = inner.st.clone();
        // Marked while the files may disagree with the saved state: a process killed here
        // (a crash test's SIGKILL lands while this thread renders) leaves the mark, and the
        // next process to take the lock redraws every GPU.
        let mark = self.root.join(state::DIRTY_FILE);
        // Left by a process that died rendering (this one holds the lock now, so no live one
        // is mid-render): whoever finds it redraws, here and now. Deferring that to the next
        // open lost it when a process that stayed open found the mark first (a clock thread
        // applying a udev bind), removed it, and never redrew.
        let died_rendering = mark.exists();
        if !died_rendering {
            let _ = std::fs::File::create(&mark);
        }
        let r = f(&mut inner.st);
        if died_rendering {
            for pf in self.model.pfs {
                self.render_gpu(&inner.st, pf)?;
            }
        }
        let saved = if inner.st != before {
            state::save(&self.root, &inner.st).map_err(to_io)
        } else {
            Ok(())
        };
        if saved.is_ok() {
            let _ = std::fs::remove_file(&mark);
        }
        saved?;
        if inner.st != before {
            inner.stamp = state::stamp(&self.root);
            if inner.st.pending != before.pending && !inner.st.pending.is_empty() {
                drop(lock);
                drop(inner);
                self.wake_clock();
            }
        }
        r
    }

    /// Make the files agree with the state again when a process died between the two (a crash
    /// test killing vgpuctl while another thread was creating a vGPU). Cheap when they agree.
    pub(crate) fn reconcile(&self) -> Result<()> {
        self.with(|st| {
            let listed: std::collections::BTreeSet<String> =
                std::fs::read_dir(self.root.join("sys/bus/mdev/devices"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect();
            let wanted: std::collections::BTreeSet<String> = st
                .vgpus
                .iter()
                .filter(|v| !v.uuid.is_empty())
                .map(|v| v.uuid.clone())
                .collect();
            // The mdev devices listed differ from the state's (a process that died between a
            // change and its files, before the render mark existed, is redrawn by `with`).
            if listed != wanted {
                for pf in self.model.pfs {
                    self.render_gpu(st, pf)?;
                }
            }
            Ok(())
        })?;
        Ok(())
    }

    pub(crate) fn opt(&self, key: &str) -> Option<String> {
        self.with(|st| Ok(st.opts.get(key).cloned())).ok().flatten()
    }

    fn opt_ms(&self, key: &str) -> u64 {
        self.opt(key).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    pub(crate) fn merge_opts(&self, opts: &[(String, String)]) -> Result<()> {
        self.with(|st| {
            for (k, v) in opts {
                if v.is_empty() {
                    st.opts.remove(k);
                } else {
                    st.opts.insert(k.clone(), v.clone());
                }
            }
            layout::render_globals(&self.root, self.model, st).map_err(to_io)
        })?;
        Ok(())
    }

    pub(crate) fn set_service(&self, unit: &str, active: bool) -> Result<()> {
        self.with(|st| {
            if active {
                st.active_services.insert(unit.to_string());
            } else {
                st.active_services.remove(unit);
            }
            Ok(())
        })?;
        Ok(())
    }

    pub(crate) fn render_gpu(&self, st: &State, pf: &str) -> io::Result<()> {
        layout::render_gpu(&self.root, self.model, st, pf).map_err(to_io)
    }

    // -----------------------------------------------------------------------------------------
    // Driver binding

    /// Bind `dev` to `driver` when the driver can take it.
    pub(crate) fn bind(&self, st: &mut State, dev: &str, driver: &str) -> io::Result<()> {
        let m = self.model;
        let Some(pf) = pf_of(m, dev) else {
            return Err(errno(libc::ENODEV, "not a GPU function"));
        };
        if st.bound.contains_key(dev) {
            return Err(errno(libc::EBUSY, "already bound"));
        }
        if !st.modules.contains(layout::module_of(driver)) {
            return Err(errno(libc::ENOENT, "driver not loaded"));
        }
        let ok = match driver {
            "nvidia" => m.vgpu_capable() || st.datacenter_driver.is_some(),
            "nouveau" => dev == pf,
            "vfio-pci" => st.overrides.get(dev).is_some_and(|o| o == "vfio-pci"),
            _ => false,
        };
        if !ok {
            return Err(errno(libc::ENODEV, "driver does not claim the device"));
        }
        st.bound.insert(dev.to_string(), driver.to_string());
        self.render_gpu(st, pf)
    }

    pub(crate) fn unbind(&self, st: &mut State, dev: &str, driver: Option<&str>) -> io::Result<()> {
        let m = self.model;
        let Some(pf) = pf_of(m, dev) else {
            return Err(errno(libc::ENODEV, "not a GPU function"));
        };
        match (st.bound.get(dev), driver) {
            (None, _) => return Err(errno(libc::ENODEV, "not bound")),
            (Some(b), Some(d)) if b != d => return Err(errno(libc::ENODEV, "bound elsewhere")),
            _ => {}
        }
        st.bound.remove(dev);
        if dev == pf {
            // The PF's driver owned SR-IOV: its VFs and their vGPUs go with it, and its MIG GPU
            // instances (driver memory).
            self.drop_vfs(st, pf);
            st.gpu_instances.retain(|g| g.pf != pf);
        }
        st.vgpus.retain(|v| v.parent != dev);
        self.render_gpu(st, pf)
    }

    pub(crate) fn drop_vfs(&self, st: &mut State, pf: &str) {
        st.numvfs.remove(pf);
        let vfs = self.model.vfs_of(pf);
        for vf in &vfs {
            st.bound.remove(vf);
            st.vf_groups.remove(vf);
            layout::rmtree(&self.root, &layout::staged_group_rel(vf));
        }
        st.vgpus.retain(|v| v.pf != pf || v.parent == pf);
        st.pending.retain(|p| match &p.event {
            Event::EnableVfs { pf: x } => x != pf,
            Event::VfGroup { vf } => !vfs.contains(vf),
            Event::Bind { .. } => true,
        });
    }

    /// The VFs appear, bound to nvidia; each one's vGPU group is filled in later, one after
    /// the other `vf_group_ms` apart (recorded-behaviour §2; the interval is a guess).
    pub(crate) fn enable_vfs(&self, st: &mut State, pf: &str, n: u32) -> io::Result<()> {
        st.numvfs.insert(pf.to_string(), n);
        let step = st
            .opts
            .get("vf_group_ms")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(DEFAULT_VF_GROUP_MS);
        let now = state::now_ms();
        for (i, vf) in self
            .model
            .vfs_of(pf)
            .into_iter()
            .take(n as usize)
            .enumerate()
        {
            if st.modules.contains("nvidia") {
                st.bound.insert(vf.clone(), "nvidia".into());
            }
            if step == 0 {
                st.vf_groups.insert(vf);
            } else {
                st.pending.push(Pending {
                    due_ms: now + step * (i as u64 + 1),
                    event: Event::VfGroup { vf },
                });
            }
        }
        self.render_gpu(st, pf)
    }

    /// Materialize pending events whose time has come.
    fn materialize(&self, st: &mut State) -> io::Result<()> {
        let now = state::now_ms();
        if !st.pending.iter().any(|p| p.due_ms <= now) {
            return Ok(());
        }
        let (mut due, later): (Vec<Pending>, Vec<Pending>) =
            st.pending.drain(..).partition(|p| p.due_ms <= now);
        st.pending = later;
        due.sort_by_key(|p| p.due_ms);
        // A short hold: what does not fit in the slice stays due for the next pass, so a
        // create or a reader's program run gets the lock between two VFs' groups.
        let slice = std::time::Instant::now();
        let mut due = due.into_iter();
        // An event that fails to render does not take the ones after it along: they were
        // already out of `pending`, and returning early lost them for good (a GPU whose later
        // VFs never showed their groups). The first error is returned once all were applied.
        let mut first_err: Option<io::Error> = None;
        while let Some(p) = due.next() {
            if slice.elapsed() > MATERIALIZE_SLICE {
                st.pending.push(p);
                st.pending.extend(due);
                break;
            }
            match p.event {
                Event::EnableVfs { pf } => {
                    let bound = st.bound.get(&pf).is_some_and(|d| d == "nvidia");
                    if bound && st.numvfs.get(&pf).copied().unwrap_or(0) == 0 {
                        layout::adopt_staged(&self.root, self.model, &pf, p.due_ms, st.iommu);
                        if let Err(e) = self.enable_vfs(st, &pf, self.model.sriov_total) {
                            first_err.get_or_insert(e);
                        }
                    }
                }
                Event::Bind { dev, driver } => {
                    let _ = self.bind(st, &dev, &driver);
                }
                Event::VfGroup { vf } => {
                    if let Some(pf) = pf_of(self.model, &vf) {
                        if st.bound.get(&vf).is_some_and(|d| d == "nvidia") {
                            st.vf_groups.insert(vf.clone());
                            if let Err(e) =
                                layout::render_group(&self.root, self.model, st, pf, &vf)
                            {
                                // The state says the group is there: the whole GPU is drawn
                                // again, so the files follow it rather than stay half made.
                                tracing::debug!(vf, error = %e, "VF group render failed; redrawing");
                                if let Err(e) = self.render_gpu(st, pf) {
                                    first_err.get_or_insert(e);
                                }
                            }
                        }
                    }
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    // -----------------------------------------------------------------------------------------
    // vGPUs

    fn create_fail(&self, st: &State, parent: &str, pf: &str) -> bool {
        st.opts
            .get("create_fail")
            .is_some_and(|v| v.split(',').map(str::trim).any(|a| a == parent || a == pf))
    }

    /// Create a vGPU of `type_id` on `parent` (mdev `create` or vendor `current_vgpu_type`).
    fn create(&self, parent: &str, type_id: u32, uuid: &str) -> io::Result<()> {
        let ms = self.opt_ms("create_ms");
        if ms > 0 {
            std::thread::sleep(Duration::from_millis(ms));
        }
        let m = self.model;
        self.with(|st| {
            self.materialize(st)?;
            let pf = pf_of(m, parent).ok_or_else(|| errno(libc::ENODEV, "no such parent"))?;
            if !layout::parents(m, st, pf).iter().any(|p| p == parent) {
                return Err(errno(libc::ENODEV, "not a vGPU parent now"));
            }
            let t = super::branch::types(m, st)
                .iter()
                .find(|t| t.id == type_id)
                .ok_or_else(|| errno(libc::EINVAL, "unknown type"))?;
            if !uuid.is_empty() && st.vgpus.iter().any(|v| v.uuid == uuid) {
                return Err(errno(libc::EEXIST, "uuid exists"));
            }
            if self.create_fail(st, parent, pf) {
                return Err(errno(libc::EBUSY, "create_fail"));
            }
            // A MIG-backed type needs a free GPU instance of its profile: without one the
            // driver fails the write with EIO (recorded-behaviour §5, cubecos: `NVRM: Failed to
            // add vgpu create request: 0x38`, e.g. after sriov-manage wiped the instances).
            let gpu_instance = match t.gi_profile {
                Some(profile) => {
                    let gi = st
                        .mig_current
                        .contains(pf)
                        .then(|| super::mig::free_instance(st, pf, profile))
                        .flatten();
                    if gi.is_none() || layout::available(m, st, pf, parent, t) == 0 {
                        if gi.is_some() {
                            return Err(errno(libc::EINVAL, "placement: parent used"));
                        }
                        return Err(errno(libc::EIO, "no free GPU instance of the profile"));
                    }
                    gi
                }
                None => None,
            };
            if layout::available(m, st, pf, parent, t) == 0 {
                let usage = layout::GpuUse::of(st, pf);
                // Equal-size mode: another type on the GPU is a placement refusal; mixed-size
                // mode: a used VF is, and a GPU without room for this size is full.
                let (full, placement) = if usage.mixed {
                    let idle = layout::GpuUse::idle(true);
                    let room = layout::GpuUse {
                        parents: Vec::new(),
                        ..layout::GpuUse::of(st, pf)
                    };
                    (
                        room.available(m, parent, t) == 0 && idle.available(m, parent, t) > 0,
                        usage.parents.contains(&parent),
                    )
                } else {
                    (
                        usage.count >= t.max_instance,
                        st.vgpus.iter().any(|v| v.pf == pf && v.type_id != t.id),
                    )
                };
                return Err(if full && !placement {
                    errno(libc::EDQUOT, "type full on this GPU")
                } else {
                    errno(
                        libc::EINVAL,
                        "placement: parent used or GPU holds another type",
                    )
                });
            }
            let before = st.clone();
            let v = Vgpu {
                uuid: uuid.to_string(),
                parent: parent.to_string(),
                pf: pf.to_string(),
                type_id,
                gpu_instance,
            };
            if !uuid.is_empty() {
                layout::render_mdev_device(&self.root, m, &v).map_err(to_io)?;
            }
            st.vgpus.push(v);
            self.sync_types(&before, st, pf)
        })
    }

    fn remove(&self, parent: &str, uuid: Option<&str>) -> io::Result<()> {
        let m = self.model;
        self.with(|st| {
            let pf = pf_of(m, parent).ok_or_else(|| errno(libc::ENODEV, "no such parent"))?;
            let before = st.clone();
            let n = st.vgpus.len();
            st.vgpus
                .retain(|v| !(v.parent == parent && uuid.is_none_or(|u| v.uuid == u)));
            if st.vgpus.len() == n {
                return Err(errno(libc::ENODEV, "no such vGPU"));
            }
            if let Some(u) = uuid {
                let pd = devdir(m, parent);
                layout::rmtree(&self.root, &format!("{pd}/{u}"));
                layout::unlink(&self.root, &format!("sys/bus/mdev/devices/{u}"));
                for d in std::fs::read_dir(self.root.join(format!("{pd}/mdev_supported_types")))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let _ = std::fs::remove_file(d.path().join("devices").join(u));
                }
            }
            self.sync_types(&before, st, pf)
        })
    }

    /// Rewrite only the availability files whose value changed between two states (keeps a
    /// create on a 256-VF host cheap).
    fn sync_types(&self, before: &State, after: &State, pf: &str) -> io::Result<()> {
        let m = self.model;
        let types = super::branch::types(m, after);
        let (ub, ua) = (
            layout::GpuUse::of(before, pf),
            layout::GpuUse::of(after, pf),
        );
        for p in layout::parents(m, after, pf) {
            let pd = devdir(m, &p);
            match m.iface {
                Iface::Mdev => {
                    for t in types {
                        let (a, b) = (ub.available(m, &p, t), ua.available(m, &p, t));
                        if a != b {
                            let f = format!(
                                "{pd}/mdev_supported_types/{}/available_instances",
                                m.type_dir(&p, t.id)
                            );
                            layout::put(&self.root, &f, &format!("{b}\n")).map_err(to_io)?;
                        }
                    }
                }
                Iface::VendorVfio => {
                    let changed = types
                        .iter()
                        .any(|t| ub.available(m, &p, t) != ua.available(m, &p, t))
                        || ub.parents.contains(&p.as_str()) != ua.parents.contains(&p.as_str());
                    if changed {
                        layout::render_types(&self.root, m, after, pf).map_err(to_io)?;
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Boot

    /// A boot: new boot id, cmdline from the boot loader, modules and drivers as the boot leaves
    /// them, no VFs, no vGPUs, enabled services active. Returns the new state.
    pub(crate) fn boot(&self) -> Result<State> {
        let m = self.model;
        let root = self.root.clone();
        let st = self.with(|st| {
            st.boot_count += 1;
            st.boot_id = uuid::Uuid::new_v4().to_string();
            st.cmdline = layout::boot_cmdline(&root, m);
            st.reboot_requested = false;
            st.pending.clear();
            st.vgpus.clear();
            // Mixed-size mode is driver memory: it does not persist (recorded-behaviour §4).
            st.mixed_size.clear();
            // GPU instances never survive a boot; MIG mode persists only where the model's
            // does, taking its pending value (§5).
            super::mig::at_boot(m, st);
            st.numvfs.clear();
            st.vf_groups.clear();
            st.bound.clear();
            st.overrides.clear();
            st.iommu = super::iommu_active(m, &st.cmdline);
            st.modules = super::base_modules(m);
            let cmd_blacklist = st.cmdline.split_whitespace().any(|w| {
                w == "modprobe.blacklist=nouveau"
                    || w == "rd.driver.blacklist=nouveau"
                    || w == "nouveau.modeset=0"
            });
            let nouveau_blocked = cmd_blacklist
                || (super::programs::nouveau_blacklisted(&root) && st.initramfs_blacklists_nouveau);
            // The kernel the boot loader started, and whether a module was built for it (§7).
            let kver = super::kernels::booted(&root, m, &st.cmdline);
            layout::put(&root, "proc/sys/kernel/osrelease", &format!("{kver}\n")).map_err(to_io)?;
            let nvidia_installed = super::kernels::module_built(&root, &kver);
            let gpu_driver = if nvidia_installed {
                st.modules.insert("nvidia".into());
                st.registry_dwords = super::modprobe::nvidia_registry_dwords(&root);
                st.loaded_driver = st.driver.clone();
                if st.driver.is_some() && m.iface == Iface::Mdev {
                    st.modules.extend(
                        [
                            "nvidia_vgpu_vfio",
                            "mdev",
                            "vfio_pci_core",
                            "vfio",
                            "vfio_iommu_type1",
                        ]
                        .map(String::from),
                    );
                }
                if m.vgpu_capable() || st.datacenter_driver.is_some() {
                    Some("nvidia")
                } else {
                    None
                }
            } else if !nouveau_blocked {
                Some("nouveau")
            } else {
                None
            };
            if !nouveau_blocked {
                // nouveau loads from the initramfs unless blacklisted there, even when the
                // NVIDIA driver ends up owning the GPUs.
                st.modules
                    .extend(["nouveau", "drm_kms_helper", "drm"].map(String::from));
            }
            let delay = st
                .opts
                .get("driver_delay_ms")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            if let Some(d) = gpu_driver {
                for pf in m.pfs {
                    if delay > 0 {
                        st.pending.push(Pending {
                            due_ms: state::now_ms() + delay,
                            event: Event::Bind {
                                dev: pf.to_string(),
                                driver: d.to_string(),
                            },
                        });
                    } else {
                        st.bound.insert(pf.to_string(), d.to_string());
                    }
                }
            }
            super::vfio_persist::claim_at_boot(&root, m, st);
            // Services: the enabled ones that are not vgpuctl's (those run via relaunch).
            st.active_services = super::programs::enabled_units(&root)
                .into_iter()
                .filter(|u| {
                    !super::programs::enabled_vgpuctl_units(&root)
                        .iter()
                        .any(|(n, _, _)| n == u)
                })
                .filter(|u| !u.starts_with("nvidia-vgpu") || st.modules.contains("nvidia"))
                .collect();
            // Runtime-only leftovers of the previous boot.
            layout::rmtree(&root, &format!("{}/staging", state::STATE_DIR));
            // /run is a tmpfs: nothing in it survives a boot.
            layout::rmtree(&root, "run");
            std::fs::create_dir_all(root.join("run"))?;
            layout::render_all(&root, m, st).map_err(to_io)?;
            Ok(st.clone())
        })?;
        Ok(st)
    }
}

/// How often a simulated kernel looks whether another process sharing the root scheduled an
/// event (its own are woken for exactly on time).
const OTHERS_POLL: Duration = Duration::from_millis(50);

/// The longest the clock holds the state applying due events before it lets others in.
const MATERIALIZE_SLICE: Duration = Duration::from_millis(5);

/// `vf_group_ms` by default: how long after the previous one each VF's vGPU group appears. *A
/// guess*: the recorded sources say only that the groups appear asynchronously, per VF.
pub const DEFAULT_VF_GROUP_MS: u64 = 2;

impl SimKernel {
    /// Apply the pending events whose time has come (VFs `vf_delay_ms` after `sriov-manage -e`,
    /// a driver binding `driver_delay_ms` after boot), after reloading the state when another
    /// process changed it. Returns when the next one is due (epoch ms). Cheap when nothing is.
    pub fn apply_due(&self) -> Option<u64> {
        {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let now = state::stamp(&self.root);
            if now != inner.stamp {
                if let Ok(st) = state::load(&self.root) {
                    inner.st = st;
                }
                inner.stamp = now;
            }
            let due = state::now_ms();
            if !inner.st.pending.iter().any(|p| p.due_ms <= due) {
                return inner.st.pending.iter().map(|p| p.due_ms).min();
            }
        }
        let _ = self.with(|st| self.materialize(st));
        self.with(|st| Ok(st.pending.iter().map(|p| p.due_ms).min()))
            .ok()
            .flatten()
    }

    /// The kernel's own clock: a thread that applies each pending event at its time, as a real
    /// kernel finishes `sriov-manage -e` or a udev bind asynchronously, so readers never have
    /// to poke the simulator. It ends when the kernel is dropped. Several processes on one root
    /// each run one; the state file's stamp makes them agree (whoever is first applies an
    /// event, the others reload and find it done).
    fn start_clock(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("vgpuctl-sim-clock".into())
            .spawn(move || loop {
                let Some(k) = weak.upgrade() else { return };
                let next = k.apply_due();
                let wait = match next {
                    Some(due) => {
                        Duration::from_millis(due.saturating_sub(state::now_ms())).min(OTHERS_POLL)
                    }
                    None => OTHERS_POLL,
                };
                let (lock, cv) = &k.wake;
                let mut woken = lock.lock().unwrap_or_else(|p| p.into_inner());
                if !*woken {
                    woken = cv
                        .wait_timeout(woken, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                *woken = false;
            });
        if let Err(e) = spawned {
            tracing::warn!("simulated kernel: no clock thread ({e}); events apply on writes only");
        }
    }

    /// Wake the clock: this process just scheduled an event.
    pub(crate) fn wake_clock(&self) {
        let (lock, cv) = &self.wake;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }

    /// Write a sysfs attribute. `rel` is already checked to stay inside the root.
    pub fn write_attr(&self, root: &Path, rel: &Path, value: &str) -> io::Result<()> {
        self.apply_due();
        let abs = root.join(rel);
        if !abs.exists() {
            // sysfs cannot create files.
            return Err(errno(libc::ENOENT, "no such attribute"));
        }
        let canon = abs.canonicalize()?;
        let croot = root.canonicalize()?;
        let crel = canon
            .strip_prefix(&croot)
            .map_err(|_| errno(libc::EACCES, "outside the root"))?
            .to_string_lossy()
            .to_string();
        let parts: Vec<&str> = crel.split('/').collect();
        let v = value.trim();
        let m = self.model;
        let n = parts.len();
        let last = parts[n - 1];
        let parent_of = |i: usize| parts.get(n.wrapping_sub(i)).copied().unwrap_or("");
        match (parts.as_slice(), last) {
            (["sys", "bus", "pci", "drivers", d, "unbind"], _) => {
                let d = d.to_string();
                self.with(|st| self.unbind(st, v, Some(&d)))
            }
            (["sys", "bus", "pci", "drivers", d, "bind"], _) => {
                let d = d.to_string();
                self.with(|st| self.bind(st, v, &d))
            }
            (["sys", "bus", "pci", "drivers_probe"], _) => self.with(|st| {
                if st.bound.contains_key(v) {
                    return Ok(());
                }
                let driver = st
                    .overrides
                    .get(v)
                    .cloned()
                    .or_else(|| layout::default_driver(m, st).map(String::from));
                match driver {
                    Some(d) => self.bind(st, v, &d).or(Ok(())),
                    None => Ok(()),
                }
            }),
            (_, "driver_override") if parts[0] == "sys" => {
                let dev = parent_of(2).to_string();
                self.with(|st| {
                    if v.is_empty() {
                        st.overrides.remove(&dev);
                    } else {
                        st.overrides.insert(dev.clone(), v.to_string());
                    }
                    let shown = if v.is_empty() { "(null)" } else { v };
                    layout::put(root, &crel, &format!("{shown}\n")).map_err(to_io)
                })
            }
            (_, "sriov_numvfs") => {
                let pf = parent_of(2).to_string();
                let want: u32 = v.parse().map_err(|_| errno(libc::EINVAL, "not a number"))?;
                self.with(|st| {
                    let cur = st.numvfs.get(&pf).copied().unwrap_or(0);
                    if want > m.sriov_total {
                        return Err(errno(libc::ERANGE, "more than sriov_totalvfs"));
                    }
                    if want == cur {
                        return Ok(());
                    }
                    // NVIDIA's driver has no `sriov_configure`: the kernel refuses the write
                    // with ENOENT ("driver does not support SR-IOV configuration via sysfs",
                    // drivers/pci/iov.c); sriov-manage goes through pci-pf-stub instead.
                    Err(errno(libc::ENOENT, "nvidia has no sriov_configure"))
                })
            }
            (_, "create") if parent_of(3) == "mdev_supported_types" => {
                let parent = parent_of(4).to_string();
                let dir = parent_of(2);
                let id: u32 = dir
                    .rsplit('-')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| errno(libc::EINVAL, "bad type dir"))?;
                let u = uuid::Uuid::parse_str(v).map_err(|_| errno(libc::EINVAL, "bad uuid"))?;
                // The kernel keeps the canonical lower-case hyphenated form.
                self.create(&parent, id, &u.hyphenated().to_string())
            }
            (_, "remove") if uuid::Uuid::parse_str(parent_of(2)).is_ok() => {
                if v != "1" {
                    return Err(errno(libc::EINVAL, "write 1 to remove"));
                }
                let u = parent_of(2).to_string();
                self.remove(parent_of(3), Some(&u))
            }
            // Outputs the driver fills in (recorded-behaviour.md §1), never inputs.
            (_, "gpu_instance_id" | "placement_id") if parent_of(2) == "nvidia" => {
                Err(errno(libc::EPERM, "an output of the driver"))
            }
            (_, "current_vgpu_type") if parent_of(2) == "nvidia" => {
                let vf = parent_of(3).to_string();
                let id: u32 = v
                    .parse()
                    .map_err(|_| errno(libc::EINVAL, "not a type id"))?;
                if id == 0 {
                    return match self.remove(&vf, None) {
                        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
                        r => r,
                    };
                }
                let busy = self.with(|st| Ok(st.vgpus.iter().any(|x| x.parent == vf)))?;
                if busy {
                    // recorded-behaviour.md §1: a second type on a VF that holds one is EPERM.
                    return Err(errno(libc::EPERM, "VF already holds a vGPU"));
                }
                self.create(&vf, id, "")
            }
            _ => {
                // Plain attribute: replace the file (it may be a shared template link) keeping its mode.
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&canon)?.permissions().mode();
                layout::replace_file(root, &canon, value.as_bytes(), mode).map_err(to_io)
            }
        }
    }

    /// Run a program on the simulated root: answered by name (see programs.rs).
    pub fn run(&self, root: &Path, cmd: &Cmd) -> anyhow::Result<RunOutput> {
        self.apply_due();
        super::programs::run(self, root, cmd)
    }
}
