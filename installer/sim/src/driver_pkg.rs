//! vgpuctl's simulated NVIDIA host driver package: a licensed-zip look-alike whose `.run` files
//! are genuine makeself-style self-extracting shell archives (POSIX sh header + tar.gz payload
//! with an embedded SHA-256), so the driver code can exercise `--check`, `-x` and the install
//! step exactly as it would on NVIDIA's files. The payload holds stubs only; nothing in it
//! touches a real machine (its `nvidia-installer` refuses to run outside the simulator).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// The seed's zip name for a host driver version (`550.163.02` -> the 17.6 zip).
pub fn zip_name(host_ver: &str) -> String {
    format!(
        "NVIDIA-GRID-Linux-KVM-{host_ver}-{}-{}.zip",
        guest_version(host_ver),
        windows_version(host_ver)
    )
}

/// The host `.run` file name inside `Host_Drivers/`.
pub fn run_name(host_ver: &str) -> String {
    format!("NVIDIA-Linux-x86_64-{host_ver}-vgpu-kvm.run")
}

/// NVIDIA pairs host driver x.y.z with Linux guest driver x.y.(z-1) (550.163.02 / 550.163.01).
pub fn guest_version(host_ver: &str) -> String {
    match host_ver.rsplit_once('.') {
        Some((head, last)) => match last.parse::<u32>() {
            Ok(n) if n > 0 => format!("{head}.{:0width$}", n - 1, width = last.len()),
            _ => host_ver.to_string(),
        },
        None => host_ver.to_string(),
    }
}

/// The Windows guest driver of the seed's release; other versions get a plausible stand-in.
fn windows_version(host_ver: &str) -> &'static str {
    if host_ver == "550.163.02" {
        "553.74"
    } else {
        "999.99"
    }
}

/// Write the whole licensed-zip look-alike to `dest` (a `.zip` path).
pub fn build_driver_zip(dest: &Path, host_ver: &str) -> Result<()> {
    check_version(host_ver)?;
    let guest_ver = guest_version(host_ver);
    let host_run = run_bytes(host_ver, RunKind::HostVgpuKvm);
    let guest_run = run_bytes(&guest_ver, RunKind::GuestGrid);
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file =
        std::fs::File::create(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let mut zip = zip::ZipWriter::new(file);
    let exe = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o755);
    let doc = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o644);
    zip.add_directory("Host_Drivers/", doc)?;
    zip.start_file(format!("Host_Drivers/{}", run_name(host_ver)), exe)?;
    zip.write_all(&host_run)?;
    zip.add_directory("Guest_Drivers/", doc)?;
    zip.start_file(
        format!("Guest_Drivers/NVIDIA-Linux-x86_64-{guest_ver}-grid.run"),
        exe,
    )?;
    zip.write_all(&guest_run)?;
    zip.add_directory("Signing_Keys/", doc)?;
    zip.start_file("Signing_Keys/README.txt", doc)?;
    zip.write_all(SIM_NOTICE.as_bytes())?;
    for pdf in [
        format!(
            "{host_ver}-{guest_ver}-{}-release-notes-kvm.pdf",
            windows_version(host_ver)
        ),
        "grid-vgpu-user-guide.pdf".to_string(),
    ] {
        zip.start_file(pdf, doc)?;
        zip.write_all(&fake_pdf())?;
    }
    zip.finish()?;
    Ok(())
}

/// Write a bare host `.run` (mode 0755) to `dest`.
pub fn build_run(dest: &Path, host_ver: &str) -> Result<()> {
    check_version(host_ver)?;
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(dest, run_bytes(host_ver, RunKind::HostVgpuKvm))
        .with_context(|| format!("cannot write {}", dest.display()))?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn check_version(v: &str) -> Result<()> {
    if v.is_empty() || !v.chars().all(|c| c.is_ascii_digit() || c == '.') {
        bail!("driver version {v:?} is not like 550.163.02");
    }
    Ok(())
}

const SIM_NOTICE: &str = "This file belongs to vgpuctl's SIMULATED driver package, built for \
tests and demos. It is not NVIDIA software and contains no NVIDIA code.\n";

fn fake_pdf() -> Vec<u8> {
    // Enough of a PDF for `file` to say "PDF document"; nobody reads it.
    format!("%PDF-1.4\n% {SIM_NOTICE}%%EOF\n").into_bytes()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunKind {
    /// `NVIDIA-Linux-x86_64-<ver>-vgpu-kvm.run`, the KVM host driver.
    HostVgpuKvm,
    /// `NVIDIA-Linux-x86_64-<ver>-grid.run`, the Linux guest driver.
    GuestGrid,
}

impl RunKind {
    fn suffix(self) -> &'static str {
        match self {
            RunKind::HostVgpuKvm => "vgpu-kvm",
            RunKind::GuestGrid => "grid",
        }
    }
}

/// The bytes of a self-extracting `.run`.
pub fn run_bytes(version: &str, kind: RunKind) -> Vec<u8> {
    let target = format!("NVIDIA-Linux-x86_64-{version}-{}", kind.suffix());
    let payload = targz(&payload_files(&target, version, kind));
    let sha = hex::encode(Sha256::digest(&payload));
    // The header's line count does not depend on the digits of `skip`, so compute it with a
    // placeholder and substitute.
    let header = |skip: usize| {
        HEADER
            .replace(
                "@LABEL@",
                &format!("NVIDIA Accelerated Graphics Driver for Linux-x86_64 {version}"),
            )
            .replace("@VERSION@", version)
            .replace("@TARGET@", &target)
            .replace("@SHA256@", &sha)
            .replace("@SIZE@", &payload.len().to_string())
            .replace("@SKIP@", &skip.to_string())
    };
    let lines = header(0).lines().count();
    let mut out = header(lines + 1).into_bytes();
    out.extend_from_slice(&payload);
    out
}

/// What the header of a `.run` says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInfo {
    pub label: String,
    pub version: String,
    pub target: String,
    pub sha256: String,
    pub size: usize,
    /// Byte offset of the payload.
    pub payload_offset: usize,
}

/// Parse a makeself-style header written by [`run_bytes`] (and verify nothing).
pub fn parse_run(bytes: &[u8]) -> Result<RunInfo> {
    let head_len = bytes.len().min(16 * 1024);
    let head = String::from_utf8_lossy(&bytes[..head_len]);
    let field = |key: &str| -> Option<String> {
        head.lines()
            .take(200)
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(|v| v.trim_matches('"').to_string())
    };
    if !head.starts_with("#!/bin/sh") {
        bail!("not a self-extracting archive: no #!/bin/sh header");
    }
    let (Some(label), Some(version), Some(target), Some(sha256), Some(size), Some(skip)) = (
        field("label"),
        field("version"),
        field("targetdir"),
        field("sha256"),
        field("filesize"),
        field("skip"),
    ) else {
        bail!("not a makeself-style archive: header fields missing");
    };
    let skip: usize = skip.parse().context("bad skip= line")?;
    let size: usize = size.parse().context("bad filesize= line")?;
    // Payload starts after the (skip-1)th newline.
    let mut offset = 0;
    for _ in 1..skip {
        let nl = bytes[offset..]
            .iter()
            .position(|&b| b == b'\n')
            .context("archive shorter than its header")?;
        offset += nl + 1;
    }
    Ok(RunInfo {
        label,
        version,
        target,
        sha256,
        size,
        payload_offset: offset,
    })
}

/// What `--check` does, in Rust: the payload's size and SHA-256 match the header.
pub fn verify_run(bytes: &[u8]) -> Result<RunInfo> {
    let info = parse_run(bytes)?;
    let payload = &bytes[info.payload_offset..];
    if payload.len() != info.size {
        bail!(
            "Error in archive size: payload is {} bytes, the header says {} (truncated or \
             corrupted download)",
            payload.len(),
            info.size
        );
    }
    let got = hex::encode(Sha256::digest(payload));
    if got != info.sha256 {
        bail!(
            "Error in SHA256 checksums: {got} is different from {} (corrupted file)",
            info.sha256
        );
    }
    Ok(info)
}

/// The files of a verified `.run` payload (path, mode, bytes), as `-x` would extract them.
pub fn extract_run(bytes: &[u8]) -> Result<Vec<(String, u32, Vec<u8>)>> {
    let info = verify_run(bytes)?;
    let mut raw = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&bytes[info.payload_offset..]),
        &mut raw,
    )
    .context("payload is not gzip")?;
    untar(&raw)
}

const HEADER: &str = r##"#!/bin/sh
# This is vgpuctl's SIMULATED NVIDIA driver package, NOT NVIDIA's: a makeself-style
# self-extracting archive built for tests and demos. It holds stub files only and installs
# nothing on a real machine; the vgpuctl simulator plays its installation.
label="@LABEL@"
version="@VERSION@"
targetdir="@TARGET@"
sha256="@SHA256@"
filesize="@SIZE@"
skip="@SKIP@"
umask 022

payload() { tail -n +"$skip" "$0"; }
sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then shasum -a 256 | cut -d' ' -f1
    else openssl dgst -sha256 | sed 's/.* //'; fi
}
check() {
    printf 'Verifying archive integrity...'
    got_size=$(payload | wc -c | tr -d ' ')
    if [ "$got_size" != "$filesize" ]; then
        echo " Error in archive size: $got_size bytes instead of $filesize" >&2
        return 1
    fi
    got=$(payload | sha256_of)
    if [ "$got" != "$sha256" ]; then
        echo " Error in SHA256 checksums: $got is different from $sha256" >&2
        return 1
    fi
    echo " OK"
}
extract() {
    mkdir -p "$1" || return 1
    printf 'Uncompressing %s' "$label"
    payload | gzip -dc | tar -xf - -C "$1" || { echo " failed" >&2; return 1; }
    echo "..."
}
usage() {
    echo "$0 [options]: $label"
    echo "  --check           verify the archive integrity and exit"
    echo "  --version         print the version and exit"
    echo "  --info            print the archive header"
    echo "  --list            list the payload"
    echo "  -x, --extract-only  extract into ./$targetdir"
    echo "  --target DIR      extract into DIR/$targetdir"
    echo "  other options go to nvidia-installer"
}

dest="."
extract_only=0
while [ $# -gt 0 ]; do
    case "$1" in
        --check) check; exit $? ;;
        --version|-v) echo "$label"; echo "version: $version"; exit 0 ;;
        --info) echo "Identification: $label"; echo "Target directory: $targetdir";
                echo "Uncompressed size: $filesize bytes"; echo "SHA256: $sha256"; exit 0 ;;
        --list) check >/dev/null || exit 1; payload | gzip -dc | tar -tf -; exit $? ;;
        -x|--extract-only) extract_only=1; shift ;;
        --target) dest="$2"; shift 2 ;;
        -h|--help|-A|--advanced-options) usage; exit 0 ;;
        *) break ;;
    esac
done
check || exit 1
if [ "$extract_only" = 1 ]; then extract "$dest"; exit $?; fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/selfgz.XXXXXX") || exit 1
extract "$tmp" || { rm -rf "$tmp"; exit 1; }
(cd "$tmp/$targetdir" && ./nvidia-installer "$@")
rc=$?
rm -rf "$tmp"
exit $rc
"##;

fn payload_files(target: &str, version: &str, kind: RunKind) -> Vec<(String, u32, Vec<u8>)> {
    let mut files = vec![
        (format!("{target}/"), 0o755, Vec::new()),
        (
            format!("{target}/nvidia-installer"),
            0o755,
            format!(
                "#!/bin/sh\n# vgpuctl simulated nvidia-installer {version}\n\
                 echo 'ERROR: this is vgpuctl'\"'\"'s simulated driver package: it installs only on a \
                 vgpuctl simulated host (vgpuctl --simulate MODEL --root DIR).' >&2\nexit 1\n"
            )
            .into_bytes(),
        ),
        (format!("{target}/README.txt"), 0o644, SIM_NOTICE.as_bytes().to_vec()),
        (
            format!("{target}/.manifest"),
            0o644,
            format!("{version}\nx86_64\nkind: {}\n", kind.suffix()).into_bytes(),
        ),
        (format!("{target}/kernel/"), 0o755, Vec::new()),
        // A few KB of deterministic filler stands in for the kernel module sources, so that
        // a flipped byte lands in compressed data as it would in a real driver.
        (format!("{target}/kernel/nvidia.o_binary"), 0o644, filler(version, 48 * 1024)),
        (
            format!("{target}/nvidia-smi"),
            0o755,
            format!("#!/bin/sh\necho 'vgpuctl simulated nvidia-smi {version}'\n").into_bytes(),
        ),
    ];
    if kind == RunKind::HostVgpuKvm {
        files.push((
            format!("{target}/sriov-manage"),
            0o755,
            b"#!/bin/sh\necho 'vgpuctl simulated sriov-manage'\n".to_vec(),
        ));
        files.push((format!("{target}/init-scripts/"), 0o755, Vec::new()));
        files.push((
            format!("{target}/init-scripts/systemd/nvidia-vgpu-mgr.service"),
            0o644,
            VGPU_MGR_UNIT.as_bytes().to_vec(),
        ));
        files.push((
            format!("{target}/init-scripts/systemd/nvidia-vgpud.service"),
            0o644,
            VGPUD_UNIT.as_bytes().to_vec(),
        ));
    }
    files
}

/// The vGPU manager unit NVIDIA's installer drops in `/lib/systemd/system/`.
pub const VGPU_MGR_UNIT: &str = "[Unit]\nDescription=NVIDIA vGPU Manager Daemon\nWants=syslog.target\n\
Wants=nvidia-vgpud.service\nAfter=nvidia-vgpud.service\n\n[Service]\nType=forking\n\
KillMode=process\nExecStart=/usr/bin/nvidia-vgpu-mgr\nExecStopPost=/bin/rm -rf /var/run/nvidia-vgpu-mgr\n\n\
[Install]\nWantedBy=multi-user.target\n";

pub const VGPUD_UNIT: &str =
    "[Unit]\nDescription=NVIDIA vGPU Daemon\nWants=syslog.target\n\n[Service]\n\
Type=forking\nExecStart=/usr/bin/nvidia-vgpud\nExecStopPost=/bin/rm -rf /var/run/nvidia-vgpud\n\n\
[Install]\nWantedBy=multi-user.target\n";

fn filler(seed: &str, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut block = Sha256::digest(seed.as_bytes());
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(block);
    }
    out.truncate(len);
    out
}

/// A ustar archive, gzip-compressed. Entries ending in `/` are directories.
fn targz(files: &[(String, u32, Vec<u8>)]) -> Vec<u8> {
    let mut tar = Vec::new();
    for (name, mode, data) in files {
        let mut h = [0u8; 512];
        let is_dir = name.ends_with('/');
        put(&mut h[0..100], name.as_bytes());
        put(&mut h[100..108], format!("{mode:07o}").as_bytes());
        put(&mut h[108..116], b"0000000");
        put(&mut h[116..124], b"0000000");
        put(&mut h[124..136], format!("{:011o}", data.len()).as_bytes());
        // A fixed mtime keeps the archive (and its checksum) reproducible.
        put(
            &mut h[136..148],
            format!("{:011o}", 1_750_000_000u64).as_bytes(),
        );
        h[156] = if is_dir { b'5' } else { b'0' };
        put(&mut h[257..263], b"ustar\0");
        put(&mut h[263..265], b"00");
        put(&mut h[265..297], b"root");
        put(&mut h[297..329], b"root");
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        put(&mut h[148..156], format!("{sum:06o}\0 ").as_bytes());
        tar.extend_from_slice(&h);
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.resize(tar.len() + 1024, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).expect("in-memory write");
    gz.finish().expect("in-memory write")
}

fn put(field: &mut [u8], v: &[u8]) {
    field[..v.len()].copy_from_slice(v);
}

fn untar(raw: &[u8]) -> Result<Vec<(String, u32, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 512 <= raw.len() {
        let h = &raw[off..off + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let text = |r: std::ops::Range<usize>| {
            let f = &h[r];
            let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
            String::from_utf8_lossy(&f[..end]).trim().to_string()
        };
        let name = text(0..100);
        let mode = u32::from_str_radix(&text(100..108), 8).context("bad tar mode")?;
        let size = usize::from_str_radix(&text(124..136), 8).context("bad tar size")?;
        let start = off + 512;
        let data = raw
            .get(start..start + size)
            .context("tar entry runs past the end")?
            .to_vec();
        out.push((name, mode, data));
        off = start + size.div_ceil(512) * 512;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sh(run: &Path, args: &[&str], cwd: &Path) -> std::process::Output {
        Command::new("sh")
            .arg(run)
            .args(args)
            .current_dir(cwd)
            .output()
            .expect("sh runs")
    }

    #[test]
    fn names_follow_the_seed() {
        assert_eq!(
            zip_name("550.163.02"),
            "NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip"
        );
        assert_eq!(guest_version("550.163.02"), "550.163.01");
        assert_eq!(
            run_name("550.163.02"),
            "NVIDIA-Linux-x86_64-550.163.02-vgpu-kvm.run"
        );
    }

    #[test]
    fn run_passes_check_with_real_sh_and_fails_when_a_byte_flips() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join(run_name("550.163.02"));
        build_run(&run, "550.163.02").unwrap();
        let out = sh(&run, &["--check"], dir.path());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(
            stdout.contains("Verifying archive integrity... OK"),
            "{stdout}"
        );
        verify_run(&std::fs::read(&run).unwrap()).unwrap();

        let out = sh(&run, &["--version"], dir.path());
        assert!(String::from_utf8_lossy(&out.stdout)
            .contains("NVIDIA Accelerated Graphics Driver for Linux-x86_64 550.163.02"));

        // Flip one byte in the middle of the payload.
        let mut bytes = std::fs::read(&run).unwrap();
        let info = parse_run(&bytes).unwrap();
        let i = info.payload_offset + info.size / 2;
        bytes[i] ^= 0x40;
        let bad = dir.path().join("bad.run");
        std::fs::write(&bad, &bytes).unwrap();
        let out = sh(&bad, &["--check"], dir.path());
        assert!(!out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("SHA256"));
        assert!(verify_run(&bytes).is_err());

        // Truncation is caught too.
        let cut = dir.path().join("cut.run");
        std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
        assert!(!sh(&cut, &["--check"], dir.path()).status.success());
    }

    #[test]
    fn extract_only_unpacks_the_payload_and_install_refuses_outside_the_sim() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("d.run");
        build_run(&run, "550.163.02").unwrap();
        let out = sh(&run, &["-x"], dir.path());
        assert!(out.status.success(), "{out:?}");
        let t = dir.path().join("NVIDIA-Linux-x86_64-550.163.02-vgpu-kvm");
        assert!(t.join("nvidia-installer").is_file());
        assert!(t
            .join("init-scripts/systemd/nvidia-vgpu-mgr.service")
            .is_file());
        let mode = std::fs::metadata(t.join("nvidia-installer"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
        // The Rust reader agrees with tar.
        let files = extract_run(&std::fs::read(&run).unwrap()).unwrap();
        assert!(files.iter().any(|(n, _, _)| n.ends_with("/sriov-manage")));

        let out = sh(&run, &["--dkms", "-s"], dir.path());
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("simulated"));
    }

    #[test]
    fn zip_has_the_licensed_layout() {
        let dir = tempfile::tempdir().unwrap();
        let z = dir.path().join(zip_name("550.163.02"));
        build_driver_zip(&z, "550.163.02").unwrap();
        let mut zip = zip::ZipArchive::new(std::fs::File::open(&z).unwrap()).unwrap();
        let names: Vec<String> = zip.file_names().map(String::from).collect();
        assert!(names.contains(&"Host_Drivers/NVIDIA-Linux-x86_64-550.163.02-vgpu-kvm.run".into()));
        assert!(names.contains(&"Guest_Drivers/NVIDIA-Linux-x86_64-550.163.01-grid.run".into()));
        let mut f = zip
            .by_name("Host_Drivers/NVIDIA-Linux-x86_64-550.163.02-vgpu-kvm.run")
            .unwrap();
        assert_eq!(f.unix_mode().unwrap() & 0o777, 0o755);
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut bytes).unwrap();
        assert_eq!(verify_run(&bytes).unwrap().version, "550.163.02");
    }
}
