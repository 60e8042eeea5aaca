//! `vgpuctl restore`: at every boot, re-enable SR-IOV and recreate each pinned vGPU with its
//! saved UUID on its saved parent. GPUs are independent: each runs in its own thread and one
//! failing GPU never stops the others. Only sriov-manage runs are serialized.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use crate::facts::gpus::virtfns;
use crate::facts::vgpus::vendor_dir;
use crate::facts::Interface;
use crate::host::{Host, WriteOpts};
use crate::pins::Pins;
use crate::profile::SavedVgpu;
use crate::sysfs_parse::parse_creatable;

use super::create::{self, mdev_type_of, name_matches, vendor_current, TypeDirs};
use super::place::Create;
use super::sriov;

pub const REPORT: &str = "run/vgpuctl/restore.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Created,
    Present,
    Failed,
}

#[derive(Clone, Debug, Serialize)]
pub struct DeviceResult {
    pub uuid: String,
    pub state: State,
    pub reason: String,
    pub ms: u64,
    pub parent: String,
    #[serde(rename = "type")]
    pub type_name: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct SriovResult {
    pub pf: String,
    pub ok: bool,
    pub vfs: u32,
    pub ms: u64,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub boot_id: Option<String>,
    pub ok: bool,
    pub ms: u64,
    pub sriov: Vec<SriovResult>,
    pub devices: Vec<DeviceResult>,
}

impl Report {
    pub fn summary(&self) -> String {
        let count = |s: State| self.devices.iter().filter(|d| d.state == s).count();
        format!(
            "vgpuctl restore: {} saved vGPU(s): {} created, {} present, {} failed; SR-IOV on {}/{} GPU(s); {} ms",
            self.devices.len(),
            count(State::Created),
            count(State::Present),
            count(State::Failed),
            self.sriov.iter().filter(|s| s.ok).count(),
            self.sriov.len(),
            self.ms
        )
    }
}

/// The physical function a pinned device's SR-IOV depends on (None: PF parent or non-PCI parent).
fn sriov_pf(v: &SavedVgpu) -> Option<&str> {
    v.gpu.as_deref().filter(|g| *g != v.parent)
}

pub fn restore(host: &Host, pins: &Pins, vf_timeout: Duration) -> Result<Report> {
    let start = Instant::now();
    // Group by GPU (or by mdev parent when it is not a PCI function of a GPU).
    let mut groups: BTreeMap<String, Vec<SavedVgpu>> = BTreeMap::new();
    for v in &pins.vgpus {
        let key = v.gpu.clone().unwrap_or_else(|| v.parent.clone());
        groups.entry(key).or_default().push(v.clone());
    }
    for pf in &pins.sriov {
        groups.entry(pf.clone()).or_default();
    }
    let needs_sriov = |key: &str, devs: &[SavedVgpu]| {
        pins.sriov.iter().any(|p| p == key) || devs.iter().any(|d| sriov_pf(d) == Some(key))
    };
    let results: Vec<(Option<SriovResult>, Vec<DeviceResult>)> = std::thread::scope(|s| {
        let handles: Vec<_> = groups
            .iter()
            .map(|(key, devs)| {
                let sriov = needs_sriov(key, devs);
                s.spawn(move || restore_group(host, key, devs, sriov, vf_timeout))
            })
            .collect();
        handles
            .into_iter()
            .zip(groups.iter())
            .map(|(h, (key, devs))| {
                h.join().unwrap_or_else(|_| {
                    let failed = devs
                        .iter()
                        .map(|d| failed(d, format!("internal error restoring {key}"), 0))
                        .collect();
                    (None, failed)
                })
            })
            .collect()
    });
    let mut report = Report {
        boot_id: host.read_trim("proc/sys/kernel/random/boot_id"),
        ok: true,
        ms: 0,
        sriov: Vec::new(),
        devices: Vec::new(),
    };
    for (s, d) in results {
        report.sriov.extend(s);
        report.devices.extend(d);
    }
    report.ok = report.devices.iter().all(|d| d.state != State::Failed)
        && report.sriov.iter().all(|s| s.ok);
    report.ms = start.elapsed().as_millis() as u64;
    host.write_file(
        REPORT,
        serde_json::to_string_pretty(&report)?.as_bytes(),
        WriteOpts::state(),
    )?;
    Ok(report)
}

fn failed(d: &SavedVgpu, reason: String, ms: u64) -> DeviceResult {
    DeviceResult {
        uuid: d.uuid.clone(),
        state: State::Failed,
        reason,
        ms,
        parent: d.parent.clone(),
        type_name: d.type_name.clone(),
    }
}

/// One GPU's SR-IOV enable, run beside its creations: each vGPU is created as soon as its own
/// VF lists its type, not once every VF of the GPU is there.
struct Enabling<'scope> {
    pf: &'scope str,
    started: Instant,
    running: Option<std::thread::ScopedJoinHandle<'scope, Result<sriov::Enabled>>>,
    done: Option<SriovResult>,
}

impl Enabling<'_> {
    fn finished(&self) -> bool {
        self.running.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Wait for the enable to end and say how it went.
    fn result(&mut self) -> &SriovResult {
        if let Some(h) = self.running.take() {
            let r = h
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("internal error enabling SR-IOV")));
            let ms = self.started.elapsed().as_millis() as u64;
            let pf = self.pf.to_string();
            self.done = Some(match r {
                Ok(e) => SriovResult {
                    pf,
                    ok: true,
                    vfs: match e {
                        sriov::Enabled::Already(n) => n,
                        sriov::Enabled::Now { vfs, .. } => vfs,
                    },
                    ms,
                    reason: String::new(),
                },
                Err(e) => {
                    let reason = format!("{e:#}");
                    tracing::error!(pf, "{reason}");
                    SriovResult {
                        pf,
                        ok: false,
                        vfs: 0,
                        ms,
                        reason,
                    }
                }
            });
        }
        self.done
            .as_ref()
            .expect("an enable that ended has a result")
    }
}

/// How often a vGPU waiting for its VF looks again: a few cheap reads of its own parent, so
/// looking often costs little and the vGPU is created within a few ms of the VF's listing.
const VF_POLL: Duration = Duration::from_millis(4);

fn restore_group(
    host: &Host,
    key: &str,
    devs: &[SavedVgpu],
    sriov: bool,
    vf_timeout: Duration,
) -> (Option<SriovResult>, Vec<DeviceResult>) {
    std::thread::scope(|s| {
        let mut enabling = sriov.then(|| Enabling {
            pf: key,
            started: Instant::now(),
            running: Some(s.spawn(move || sriov::enable(host, key, vf_timeout))),
            done: None,
        });
        let mut group = Group {
            host,
            devs,
            claimed: present_vendor_parents(host, devs),
            dirs: TypeDirs::default(),
            all_vfs_seen: !sriov,
        };
        let results = devs
            .iter()
            .map(|d| {
                let t = Instant::now();
                if let Some(e) = enabling.as_mut() {
                    // Until SR-IOV is done, wait for this vGPU's own VF to offer its type.
                    if !e.finished() {
                        crate::wait::until_every(vf_timeout, VF_POLL, || {
                            (e.finished() || group.offers(d)).then_some(())
                        });
                    }
                    if e.finished() {
                        let r = e.result();
                        if !r.ok {
                            let reason = format!("SR-IOV: {}", r.reason);
                            return failed(d, reason, t.elapsed().as_millis() as u64);
                        }
                        group.all_vfs(host);
                    }
                }
                let (state, reason) = match group.restore_one(d, &mut enabling) {
                    Ok((state, reason)) => (state, reason),
                    Err(e) => (State::Failed, format!("{e:#}")),
                };
                DeviceResult {
                    uuid: d.uuid.clone(),
                    state,
                    reason,
                    ms: t.elapsed().as_millis() as u64,
                    parent: d.parent.clone(),
                    type_name: d.type_name.clone(),
                }
            })
            .collect();
        let sriov_result = enabling.as_mut().map(|e| e.result().clone());
        (sriov_result, results)
    })
}

/// VFs already holding the vendor-VFIO type of a pin, so a moved device never takes one.
fn present_vendor_parents(host: &Host, devs: &[SavedVgpu]) -> Vec<String> {
    devs.iter()
        .filter(|d| d.interface == "vendor-vfio")
        .filter(|d| vendor_current(host, &d.parent).as_deref() == Some(d.type_id.as_str()))
        .map(|d| d.parent.clone())
        .collect()
}

fn interface_of(d: &SavedVgpu) -> Interface {
    if d.interface == "vendor-vfio" {
        Interface::VendorVfio
    } else {
        Interface::Mdev
    }
}

/// What restoring one GPU's pins has learnt so far.
struct Group<'a> {
    host: &'a Host,
    devs: &'a [SavedVgpu],
    /// Parents taken by a pin (present, or created by this restore).
    claimed: Vec<String>,
    /// Type directories found on this GPU's parents, read once.
    dirs: TypeDirs,
    /// SR-IOV is done (or not needed): every VF there is to see is there.
    all_vfs_seen: bool,
}

impl Group<'_> {
    /// Once SR-IOV is done, count the pins found present on VFs that came since the start.
    fn all_vfs(&mut self, host: &Host) {
        if !self.all_vfs_seen {
            for p in present_vendor_parents(host, self.devs) {
                if !self.claimed.contains(&p) {
                    self.claimed.push(p);
                }
            }
            self.all_vfs_seen = true;
        }
    }

    /// Does `d`'s saved parent list `d`'s type (whether or not it can take it now)?
    fn offers(&mut self, d: &SavedVgpu) -> bool {
        match interface_of(d) {
            Interface::Mdev => self
                .dirs
                .find(self.host, &d.parent, &d.type_name, &d.type_id)
                .is_some(),
            _ => {
                vendor_offers(self.host, &d.parent, &d.type_id)
                    || vendor_current(self.host, &d.parent).is_some()
            }
        }
    }

    fn restore_one(
        &mut self,
        d: &SavedVgpu,
        enabling: &mut Option<Enabling<'_>>,
    ) -> Result<(State, String)> {
        let host = self.host;
        let interface = interface_of(d);
        // Present already?
        match interface {
            Interface::Mdev => {
                if let Some(name) = mdev_type_of(host, &d.uuid) {
                    return if name_matches(&name, &d.type_name) || name == d.type_id {
                        Ok((State::Present, String::new()))
                    } else {
                        anyhow::bail!("exists with type {name}, not {}: left alone", d.type_name)
                    };
                }
            }
            _ => {
                if self.claimed.contains(&d.parent)
                    && vendor_current(host, &d.parent).as_deref() == Some(d.type_id.as_str())
                {
                    return Ok((State::Present, String::new()));
                }
            }
        }
        let on = |parent: &str| Create {
            gpu: d.gpu.clone().unwrap_or_default(),
            parent: parent.to_string(),
            type_id: d.type_id.clone(),
            type_name: d.type_name.clone(),
            uuid: d.uuid.clone(),
            interface,
        };
        // The saved parent first, if it can take it.
        if self.parent_free(d, &d.parent) {
            create::create_with(host, &on(&d.parent), &mut self.dirs)?;
            self.claim(d, &d.parent);
            return Ok((State::Created, String::new()));
        }
        // Else any free VF of the same GPU, once SR-IOV is done: until then a VF that is not
        // there yet is on its way, not gone.
        if let Some(e) = enabling.as_mut() {
            if !e.result().ok {
                anyhow::bail!("SR-IOV: {}", e.result().reason);
            }
            self.all_vfs(host);
            if self.parent_free(d, &d.parent) {
                create::create_with(host, &on(&d.parent), &mut self.dirs)?;
                self.claim(d, &d.parent);
                return Ok((State::Created, String::new()));
            }
        }
        if let Some(gpu) = d.gpu.as_deref() {
            for vf in virtfns(host, gpu) {
                if vf != d.parent && self.parent_free(d, &vf) {
                    create::create_with(host, &on(&vf), &mut self.dirs)?;
                    self.claim(d, &vf);
                    return Ok((
                        State::Created,
                        format!(
                            "saved parent {} was gone or taken; created on {vf}",
                            d.parent
                        ),
                    ));
                }
            }
        }
        anyhow::bail!(
            "no parent can take it: saved parent {} is gone or full and no other free parent of {} \
             offers {} now (in NVIDIA's default equal-size mode a GPU holds one vGPU type at a time)",
            d.parent,
            d.gpu.as_deref().unwrap_or("its device"),
            d.type_name
        )
    }

    /// A vendor-VFIO VF holds one vGPU and shows no UUID, so a VF used by one pin is taken for
    /// the others. mdev parents say themselves how many more they take (a pre-Ampere PF takes
    /// many).
    fn claim(&mut self, d: &SavedVgpu, parent: &str) {
        if interface_of(d) == Interface::VendorVfio {
            self.claimed.push(parent.to_string());
        }
    }

    /// Can `parent` take device `d` now?
    fn parent_free(&mut self, d: &SavedVgpu, parent: &str) -> bool {
        let host = self.host;
        if self.claimed.iter().any(|c| c == parent) {
            return false;
        }
        match interface_of(d) {
            Interface::Mdev => {
                let Some(dir) = self.dirs.find(host, parent, &d.type_name, &d.type_id) else {
                    return false;
                };
                host.read_trim(&format!("{dir}/available_instances"))
                    .and_then(|s| s.parse::<u32>().ok())
                    .unwrap_or(0)
                    > 0
            }
            _ => vendor_current(host, parent).is_none() && vendor_offers(host, parent, &d.type_id),
        }
    }
}

/// Does vendor-VFIO VF `vf` list type `type_id` as creatable now (and take a type at all)?
fn vendor_offers(host: &Host, vf: &str, type_id: &str) -> bool {
    let dir = vendor_dir(vf);
    host.exists(&format!("{dir}/current_vgpu_type"))
        && host
            .read(&format!("{dir}/creatable_vgpu_types"))
            .map(|t| {
                parse_creatable(&t)
                    .iter()
                    .any(|c| c.id.to_string() == type_id)
            })
            .unwrap_or(false)
}
