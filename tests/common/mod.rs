//! Shared helpers for integration tests: run the real binary on a simulated root, hash a tree.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vgpuctl"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where simulated roots live: tmpfs when there is one. A simulated reboot deletes ~40k sysfs
/// entries; on this machine's disk that takes ~10 s, on tmpfs ~0.3 s.
pub fn scratch() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let ok = shm.is_dir()
        && tempfile::Builder::new()
            .prefix("vgpuctl-probe-")
            .tempdir_in(shm)
            .is_ok();
    if ok {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

pub struct Sim {
    pub dir: tempfile::TempDir,
    pub model: String,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn to_run(o: Output) -> Run {
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

impl Sim {
    /// A fresh simulated host of `model` (created by the first command).
    pub fn new(model: &str) -> Sim {
        let dir = tempfile::Builder::new()
            .prefix("vgpuctl-sim-")
            .tempdir()
            .unwrap();
        let s = Sim {
            dir,
            model: model.to_string(),
        };
        let r = s.run(&["sim", "info"]);
        assert_eq!(r.code, 0, "creating {model}: {r:?}");
        s
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(bin());
        c.arg("--root")
            .arg(self.root())
            .arg("--simulate")
            .arg(&self.model);
        c.env_remove("VGPUCTL_LOG");
        c.stdin(std::process::Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        to_run(self.cmd().args(args).output().unwrap())
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = self.cmd();
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        to_run(c.output().unwrap())
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let r = self.run(args);
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {r:?}"))
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root().join(rel.trim_start_matches('/'))).unwrap_or_default()
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.root()
            .join(rel.trim_start_matches('/'))
            .symlink_metadata()
            .is_ok()
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.root().join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn hash(&self) -> String {
        tree_hash(self.root())
    }

    /// Run setup to the end, rebooting the simulated host whenever it stops at a checkpoint.
    pub fn setup_to_end(&self, profile: &Path) -> Vec<Run> {
        let mut runs = Vec::new();
        for _ in 0..4 {
            let r = self.run(&["setup", "--profile", profile.to_str().unwrap(), "--yes"]);
            let code = r.code;
            runs.push(r);
            match code {
                0 => return runs,
                3 => {
                    let rb = self.run(&["sim", "reboot"]);
                    assert_eq!(rb.code, 0, "sim reboot: {rb:?}");
                }
                _ => panic!("setup failed: {:?}", runs.last().unwrap()),
            }
        }
        panic!("setup did not finish in 4 runs: {:?}", runs.last().unwrap());
    }

    /// Saved UUIDs -> type name, from status --json.
    pub fn live_vgpus(&self) -> BTreeMap<String, String> {
        let s = self.json(&["status", "--json"]);
        let mut m = BTreeMap::new();
        for g in s["gpus"].as_array().unwrap() {
            for v in g["vgpus"].as_array().unwrap() {
                if let Some(u) = v["uuid"].as_str() {
                    m.insert(u.to_string(), v["type"].as_str().unwrap_or("").to_string());
                }
            }
        }
        m
    }
}

/// A hash of a directory tree: paths, modes, file contents and symlink targets.
pub fn tree_hash(root: &Path) -> String {
    fn walk(dir: &Path, root: &Path, h: &mut Sha256) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let md = p.symlink_metadata().unwrap();
            h.update(rel.as_bytes());
            h.update(md.permissions().mode().to_le_bytes());
            if md.file_type().is_symlink() {
                h.update(
                    std::fs::read_link(&p)
                        .unwrap()
                        .display()
                        .to_string()
                        .as_bytes(),
                );
            } else if md.is_dir() {
                walk(&p, root, h);
            } else {
                h.update(std::fs::read(&p).unwrap());
            }
        }
    }
    let mut h = Sha256::new();
    walk(root, root, &mut h);
    hex::encode(h.finalize())
}

/// A profile written to a temp file.
pub fn profile_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    f
}

/// Add a distribution package to a licensed zip's `Host_Drivers/`, beside its `.run`, as NVIDIA's
/// distro variants carry (`nvidia-vgpu-ubuntu-<branch>_<ver>_amd64.deb`,
/// `NVIDIA-vGPU-rhel-<rel>-<ver>.x86_64.rpm`; reference/nvidia-vgpu-host.md step 5). The body is
/// a stand-in with the format's magic: the simulator's apt-get/dnf go by the file's name.
pub fn add_host_package(zip: &Path, file: &str) {
    let magic: &[u8] = if file.ends_with(".deb") {
        b"!<arch>\ndebian-binary   1750000000  0     0     100644  4         `\n2.0\n"
    } else {
        &[0xed, 0xab, 0xee, 0xdb, 3, 0, 0, 1]
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(zip)
        .unwrap_or_else(|e| panic!("{}: {e}", zip.display()));
    let mut w = zip::ZipWriter::new_append(f).unwrap();
    w.start_file(
        format!("Host_Drivers/{file}"),
        zip::write::SimpleFileOptions::default().unix_permissions(0o644),
    )
    .unwrap();
    std::io::Write::write_all(&mut w, magic).unwrap();
    w.finish().unwrap();
}
