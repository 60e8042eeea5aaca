//! Test support for the driver tests: an HTTP/1.1 (optionally TLS) server on 127.0.0.1 written
//! with std's TcpListener, that counts connections and body bytes and can misbehave on purpose
//! (cut a body, ignore Range, answer 403/404/HTML); and a small kernel that runs a `.run` with
//! real `sh` for `--check` and fakes the install.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vgpuctl::host::{Cmd, Host, Kernel, RunOutput};

/// How the server answers one path.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// Send only this many body bytes of the next response, then close (once).
    pub cut_once_after: Option<u64>,
    /// Send this many body bytes of the next response, then stall (send nothing) for 3 s.
    pub stall_once_after: Option<u64>,
    /// Answer every request with 200 and the whole file, Range or not.
    pub ignore_range: bool,
    /// Answer with this status and body instead of the file.
    pub status: Option<(u16, String)>,
    pub content_type: Option<String>,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Vec<u8>>,
    behaviour: HashMap<String, Behaviour>,
    /// Request lines and Range headers seen (the request target includes the token).
    requests: Vec<(String, Option<String>)>,
}

pub struct TestServer {
    pub port: u16,
    pub tls: bool,
    state: Arc<Mutex<State>>,
    pub connections: Arc<AtomicUsize>,
    pub body_bytes: Arc<AtomicU64>,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_inner(None)
    }

    /// A TLS server with a certificate for 127.0.0.1/localhost from `ca`.
    pub fn start_tls(ca: &TestCa) -> TestServer {
        Self::start_inner(Some(ca.server_config()))
    }

    fn start_inner(tls: Option<Arc<rustls::ServerConfig>>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let connections = Arc::new(AtomicUsize::new(0));
        let body_bytes = Arc::new(AtomicU64::new(0));
        let server = TestServer {
            port,
            tls: tls.is_some(),
            state: state.clone(),
            connections: connections.clone(),
            body_bytes: body_bytes.clone(),
        };
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                connections.fetch_add(1, Ordering::SeqCst);
                let state = state.clone();
                let body_bytes = body_bytes.clone();
                let tls = tls.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    match tls {
                        None => serve(stream, &state, &body_bytes),
                        Some(cfg) => {
                            let Ok(conn) = rustls::ServerConnection::new(cfg) else {
                                return;
                            };
                            let tls = rustls::StreamOwned::new(conn, stream);
                            serve(tls, &state, &body_bytes)
                        }
                    }
                });
            }
        });
        server
    }

    pub fn add(&self, path: &str, body: Vec<u8>) {
        self.state
            .lock()
            .unwrap()
            .files
            .insert(path.to_string(), body);
    }

    pub fn behave(&self, path: &str, b: Behaviour) {
        self.state
            .lock()
            .unwrap()
            .behaviour
            .insert(path.to_string(), b);
    }

    pub fn url(&self, path_and_query: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path_and_query}", self.port)
    }

    /// Range headers of the requests so far.
    pub fn ranges(&self) -> Vec<Option<String>> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .map(|r| r.1.clone())
            .collect()
    }

    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    pub fn served(&self) -> u64 {
        self.body_bytes.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn serve<S: Read + Write>(stream: S, state: &Mutex<State>, body_bytes: &AtomicU64) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let target = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let path = target.split('?').next().unwrap_or("/").to_string();
    let (file, mut behaviour) = {
        let mut st = state.lock().unwrap();
        st.requests.push((request_line.clone(), range.clone()));
        let b = st.behaviour.get(&path).cloned().unwrap_or_default();
        // A cut happens once.
        if let Some(stored) = st.behaviour.get_mut(&path) {
            stored.cut_once_after = None;
            stored.stall_once_after = None;
        }
        (st.files.get(&path).cloned(), b)
    };
    let mut stream = reader.into_inner();
    let ctype = behaviour
        .content_type
        .take()
        .unwrap_or_else(|| "application/octet-stream".into());
    let (status, body, extra) = match (&behaviour.status, file) {
        (Some((code, text)), _) => (*code, text.clone().into_bytes(), String::new()),
        (None, None) => (404, b"not found".to_vec(), String::new()),
        (None, Some(data)) => {
            let start = range
                .as_deref()
                .filter(|_| !behaviour.ignore_range)
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|s| s.parse::<usize>().ok());
            match start {
                Some(s) if s < data.len() => (
                    206,
                    data[s..].to_vec(),
                    format!(
                        "Content-Range: bytes {s}-{}/{}\r\n",
                        data.len() - 1,
                        data.len()
                    ),
                ),
                Some(_) => (
                    416,
                    Vec::new(),
                    format!("Content-Range: bytes */{}\r\n", data.len()),
                ),
                None => (200, data, String::new()),
            }
        }
    };
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Status",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nContent-Type: {ctype}\r\n\
         ETag: \"v1\"\r\nAccept-Ranges: bytes\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    );
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    let send = match behaviour.cut_once_after.or(behaviour.stall_once_after) {
        Some(n) => &body[..(n as usize).min(body.len())],
        None => &body[..],
    };
    for chunk in send.chunks(64 * 1024) {
        if stream.write_all(chunk).is_err() {
            return;
        }
        body_bytes.fetch_add(chunk.len() as u64, Ordering::SeqCst);
    }
    let _ = stream.flush();
    if behaviour.stall_once_after.is_some() {
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// A test certificate authority and a server certificate for 127.0.0.1 and localhost.
pub struct TestCa {
    pub ca_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "vgpuctl test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        TestCa {
            ca_pem: ca.pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![rustls::pki_types::CertificateDer::from(
                    self.cert_der.clone(),
                )],
                rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into()),
            )
            .unwrap();
        Arc::new(cfg)
    }
}

/// A kernel for driver tests: `.run --check` runs the real archive with `sh`; the install
/// (`.run --dkms -s`, apt-get, dnf) is faked: it writes the vGPU manager unit unless told not to.
#[derive(Default)]
pub struct DriverKernel {
    pub runs: Mutex<Vec<Cmd>>,
    /// Make the installer exit with this status (and print a DKMS-like error).
    pub install_fails: Option<i32>,
    /// The installer "succeeds" without installing the unit.
    pub no_unit: bool,
}

impl DriverKernel {
    pub fn commands(&self) -> Vec<String> {
        self.runs
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect()
    }
}

impl Kernel for DriverKernel {
    /// It plays the programs, as the simulator does.
    fn reach(&self, _: &Path) -> vgpuctl::host::Reach {
        vgpuctl::host::Reach::Simulated
    }

    fn write_attr(&self, _: &Path, _: &Path, _: &str) -> std::io::Result<()> {
        Err(std::io::Error::other("no sysfs in driver tests"))
    }

    fn run(&self, host: &Host, cmd: &Cmd) -> anyhow::Result<RunOutput> {
        self.runs.lock().unwrap().push(cmd.clone());
        let out = if cmd.name().ends_with(".run")
            && cmd.args.first().map(String::as_str) == Some("--check")
        {
            let file: PathBuf = host.path(&cmd.program);
            let o = std::process::Command::new("sh")
                .arg(&file)
                .arg("--check")
                .output()?;
            RunOutput {
                status: o.status.code().unwrap_or(128),
                stdout: String::from_utf8_lossy(&o.stdout).into(),
                stderr: String::from_utf8_lossy(&o.stderr).into(),
            }
        } else if let Some(code) = self.install_fails {
            RunOutput {
                status: code,
                stdout: "Verifying archive integrity... OK\nBuilding kernel modules\n".into(),
                stderr: "ERROR: Failed to run `/usr/sbin/dkms build -m nvidia -v 550.163.02 -k 6.8.0-49-generic`: \
                         Error! Bad return status for module build on kernel: 6.8.0-49-generic (x86_64)\n\
                         ERROR: Installation has failed.  Please see the file '/var/log/nvidia-installer.log'\n"
                    .into(),
            }
        } else {
            if !self.no_unit {
                host.write_file(
                    "usr/lib/systemd/system/nvidia-vgpu-mgr.service",
                    vgpuctl_sim::driver_pkg::VGPU_MGR_UNIT.as_bytes(),
                    vgpuctl::host::WriteOpts::state(),
                )?;
            }
            RunOutput::ok("Verifying archive integrity... OK\nInstallation of the NVIDIA Accelerated Graphics Driver for Linux-x86_64 (version: 550.163.02) is now complete.\n")
        };
        if let Some(log) = &cmd.log_to {
            vgpuctl::host::kernel::append_log(host, log, cmd, &out)?;
        }
        Ok(out)
    }
}

/// Every file under `root` whose bytes contain `needle`.
pub fn files_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let data = std::fs::read(&p).unwrap();
                if data.windows(needle.len()).any(|w| w == needle)
                    || p.to_string_lossy()
                        .contains(std::str::from_utf8(needle).unwrap())
                {
                    hits.push(p);
                }
            }
        }
    }
    hits
}
