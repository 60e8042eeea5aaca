//! vgpuctl's simulated NVIDIA host driver package: a licensed-zip look-alike whose `.run` files
//! are genuine makeself-style self-extracting shell archives (POSIX sh header + tar.gz payload
//! with an embedded SHA-256), so the driver code can exercise `--check`, `-x` and the install
//! step exactly as it would on NVIDIA's files. The payload holds stubs only; nothing in it
//! touches a real machine (its `nvidia-installer` refuses to run outside the simulator).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::makeself;
use crate::seam::RunOutput;
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
    let guest_run = run_bytes(&guest_version(host_ver), RunKind::GuestGrid);
    build_driver_zip_with(
        dest,
        host_ver,
        &run_bytes(host_ver, RunKind::HostVgpuKvm),
        &guest_run,
    )
}

/// The licensed-zip layout around the given host and guest `.run` files (tests pass archives
/// built by the real `makeself`).
pub fn build_driver_zip_with(
    dest: &Path,
    host_ver: &str,
    host_run: &[u8],
    guest_run: &[u8],
) -> Result<()> {
    check_version(host_ver)?;
    let guest_ver = guest_version(host_ver);
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
    zip.write_all(host_run)?;
    zip.add_directory("Guest_Drivers/", doc)?;
    zip.start_file(
        format!("Guest_Drivers/NVIDIA-Linux-x86_64-{guest_ver}-grid.run"),
        exe,
    )?;
    zip.write_all(guest_run)?;
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
    pub fn suffix(self) -> &'static str {
        match self {
            RunKind::HostVgpuKvm => "vgpu-kvm",
            RunKind::GuestGrid => "grid",
        }
    }
}

/// The bytes of a self-extracting `.run` in makeself's format (see [`crate::makeself`]): the
/// header assigns makeself's fields (`CRCsum`, `MD5`, `SHA`, `label`, `script`, `targetdir`,
/// `filesizes`, `totalsize`, `skip`) and the payload, after the first `skip` lines, is a gzip'd
/// tar of the target directory's contents (`./...`), as `makeself DIR FILE LABEL SCRIPT` writes.
/// The shell code below the fields is vgpuctl's own, not makeself's.
pub fn run_bytes(version: &str, kind: RunKind) -> Vec<u8> {
    let target = format!("NVIDIA-Linux-x86_64-{version}-{}", kind.suffix());
    let payload = targz(&payload_files(version, kind));
    let sha = hex::encode(Sha256::digest(&payload));
    let md5 = hex::encode(makeself::md5(&payload));
    let crc = makeself::cksum(&payload).to_string();
    // The header's line count does not depend on the digits of `skip`, so compute it with a
    // placeholder and substitute.
    let header = |skip: usize| {
        HEADER
            .replace(
                "@LABEL@",
                &format!("NVIDIA Accelerated Graphics Driver for Linux-x86_64 {version}"),
            )
            .replace("@TARGET@", &target)
            .replace("@CRC@", &crc)
            .replace("@MD5@", &md5)
            .replace("@SHA256@", &sha)
            .replace("@SIZE@", &payload.len().to_string())
            .replace("@SKIP@", &skip.to_string())
    };
    let lines = header(0).lines().count();
    let mut out = header(lines).into_bytes();
    out.extend_from_slice(&payload);
    out
}

pub use crate::makeself::RunInfo;

/// Parse a makeself header, ours or one the real `makeself` wrote (and verify nothing).
pub fn parse_run(bytes: &[u8]) -> Result<RunInfo> {
    makeself::parse(bytes)
}

/// What `--check` does, in Rust: the size and every embedded checksum match the header.
pub fn verify_run(bytes: &[u8]) -> Result<RunInfo> {
    makeself::verify(bytes)
}

/// The files of a verified `.run` payload (path under `targetdir/`, mode, bytes), as `-x`
/// would extract them.
pub fn extract_run(bytes: &[u8]) -> Result<Vec<(String, u32, Vec<u8>)>> {
    Ok(makeself::extract(bytes)?.1)
}

/// The archive's own options on the simulated host, as NVIDIA's `.run` answers them:
/// `--check`, `--version`, `--info`, `--list`, `-x`/`--extract-only` [`--target DIR`]. Returns
/// the answer, or (`Ok(info)`) the verified header when the call is an install for the caller to
/// play. A damaged archive fails every option with makeself's words and exit 2, as `MS_Check`
/// does (`--info` and `--list` read the header without checking, as makeself's do).
pub(crate) fn play(root: &Path, file: &str, a: &[&str]) -> Result<Result<RunInfo, RunOutput>> {
    let bytes = std::fs::read(root.join(file))?;
    let has = |o: &str| a.contains(&o);
    if has("--info") || has("--list") {
        let info = match makeself::parse(&bytes) {
            Ok(i) => i,
            Err(e) => return Ok(Err(RunOutput::failed(2, format!("{e:#}\n")))),
        };
        if has("--info") {
            let usize_kb = makeself::extract(&bytes)
                .map(|(_, f)| {
                    f.iter()
                        .map(|(_, _, d)| d.len())
                        .sum::<usize>()
                        .div_ceil(1024)
                })
                .unwrap_or(0);
            return Ok(Err(RunOutput::ok(format!(
                "Identification: {}\nTarget directory: {}\nUncompressed size: {usize_kb} KB\n\
                 Compression: gzip\nScript run after extraction:\n     {}\n",
                info.label, info.target, info.script
            ))));
        }
        let files = match makeself::extract(&bytes) {
            Ok((_, f)) => f,
            Err(e) => return Ok(Err(RunOutput::failed(2, format!("{e:#}\n")))),
        };
        let mut out = format!("Target directory: {}\n", info.target);
        for (name, _, _) in files.iter().skip(1) {
            out.push_str(&format!(
                "./{}\n",
                name.strip_prefix(&format!("{}/", info.target))
                    .unwrap_or(name)
            ));
        }
        return Ok(Err(RunOutput::ok(out)));
    }
    let info = match makeself::verify(&bytes) {
        Ok(i) => i,
        Err(e) => {
            return Ok(Err(RunOutput {
                status: 2,
                stdout: "Verifying archive integrity...".into(),
                stderr: format!(" {e:#}\n"),
            }))
        }
    };
    if has("--check") {
        return Ok(Err(RunOutput::ok("Verifying archive integrity... OK\n")));
    }
    if has("--version") || has("-v") {
        return Ok(Err(RunOutput::ok(format!("{}\n", info.label))));
    }
    if has("-x") || has("--extract-only") {
        // `-x` extracts into ./<targetdir> (the archive's directory here: the simulator has no
        // working directory); `--target DIR` straight into DIR, as makeself's option does.
        let here = Path::new(file).parent().unwrap_or(Path::new(""));
        let target = a
            .iter()
            .position(|x| *x == "--target")
            .and_then(|i| a.get(i + 1))
            .map(|d| d.trim_start_matches('/').to_string());
        for (name, mode, data) in extract_run(&bytes)? {
            let rel = name
                .strip_prefix(&format!("{}/", info.target))
                .unwrap_or(&name);
            let dest = match &target {
                Some(t) => root.join(t).join(rel),
                None => root.join(here).join(&info.target).join(rel),
            };
            if name.ends_with('/') {
                std::fs::create_dir_all(&dest)?;
            } else {
                if let Some(d) = dest.parent() {
                    std::fs::create_dir_all(d)?;
                }
                std::fs::write(&dest, &data)?;
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
            }
        }
        return Ok(Err(RunOutput::ok(format!(
            "Creating directory {}\nVerifying archive integrity... OK\nUncompressing {}...\n",
            target.as_deref().unwrap_or(&info.target),
            info.label
        ))));
    }
    if info.version.is_empty() {
        return Ok(Err(RunOutput::failed(
            1,
            format!(
                "ERROR: the archive's label {:?} names no driver version (NVIDIA's reads \
                 \"NVIDIA Accelerated Graphics Driver for Linux-x86_64 <version>\")\n",
                info.label
            ),
        )));
    }
    Ok(Ok(info))
}

const HEADER: &str = r##"#!/bin/sh
# This is vgpuctl's SIMULATED NVIDIA driver package, NOT NVIDIA's: a self-extracting archive in
# makeself's format (its header fields and payload layout) built for tests and demos. It holds
# stub files only and installs nothing on a real machine; the vgpuctl simulator plays its
# installation. The shell code is vgpuctl's own.

CRCsum="@CRC@"
MD5="@MD5@"
SHA="@SHA256@"
label="@LABEL@"
script="./nvidia-installer"
scriptargs=""
targetdir="@TARGET@"
filesizes="@SIZE@"
totalsize="@SIZE@"
keep="n"
skip="@SKIP@"
umask 022

offset=$(head -n "$skip" "$0" | wc -c | tr -d ' ')
payload() { tail -c +"$((offset + 1))" "$0"; }
check() {
    printf 'Verifying archive integrity...'
    fsize=$(wc -c < "$0" | tr -d ' ')
    if [ "$totalsize" -ne "$((fsize - offset))" ]; then
        echo " Unexpected archive size." >&2
        return 2
    fi
    if command -v sha256sum >/dev/null 2>&1; then
        got=$(payload | sha256sum | cut -b-64)
        if [ "$got" != "$SHA" ]; then
            echo " Error in SHA256 checksums: $got is different from $SHA" >&2
            return 2
        fi
    elif command -v md5sum >/dev/null 2>&1; then
        got=$(payload | md5sum | cut -b-32)
        if [ "$got" != "$MD5" ]; then
            echo " Error in MD5 checksums: $got is different from $MD5" >&2
            return 2
        fi
    else
        got=$(payload | cksum | awk '{print $1}')
        if [ "$got" != "$CRCsum" ]; then
            echo " Error in checksums: $got is different from $CRCsum" >&2
            return 2
        fi
    fi
    echo " OK"
}
extract() {
    mkdir -p "$1" || return 1
    printf 'Uncompressing %s' "$label"
    payload | gzip -dc | (cd "$1" && tar -xf -) || { echo " failed" >&2; return 1; }
    echo "..."
}
usage() {
    echo "$0 [options]: $label"
    echo "  --check           verify the archive integrity and exit"
    echo "  --version         print the version and exit"
    echo "  --info            print the archive header"
    echo "  --list            list the payload"
    echo "  -x, --extract-only  extract into ./$targetdir"
    echo "  --target DIR      extract into DIR"
    echo "  other options go to nvidia-installer"
}

dest="$targetdir"
extract_only=0
while [ $# -gt 0 ]; do
    case "$1" in
        --check) check; exit $? ;;
        --version|-v) echo "$label"; exit 0 ;;
        --info) echo "Identification: $label"; echo "Target directory: $targetdir";
                echo "Uncompressed size: $(( ($(payload | gzip -dc | wc -c) + 1023) / 1024 )) KB";
                echo "Compression: gzip"; echo "Script run after extraction:";
                echo "     $script $scriptargs"; exit 0 ;;
        --list) echo "Target directory: $targetdir"; payload | gzip -dc | tar -tvf -; exit $? ;;
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
(cd "$tmp" && $script $scriptargs "$@")
rc=$?
rm -rf "$tmp"
exit $rc
"##;

/// The files of a `.run` payload (path relative to its `targetdir`, mode, bytes): directories end
/// in `/`. Tests lay them out and hand them to the real `makeself`.
pub fn payload_files(version: &str, kind: RunKind) -> Vec<(String, u32, Vec<u8>)> {
    let mut files = vec![
                (
            "nvidia-installer".to_string(),
            0o755,
            format!(
                "#!/bin/sh\n# vgpuctl simulated nvidia-installer {version}\n\
                 echo 'ERROR: this is vgpuctl'\"'\"'s simulated driver package: it installs only on a \
                 vgpuctl simulated host (vgpuctl --simulate MODEL --root DIR).' >&2\nexit 1\n"
            )
            .into_bytes(),
        ),
        ("README.txt".to_string(), 0o644, SIM_NOTICE.as_bytes().to_vec()),
        (
            ".manifest".to_string(),
            0o644,
            format!("{version}\nx86_64\nkind: {}\n", kind.suffix()).into_bytes(),
        ),
        ("kernel/".to_string(), 0o755, Vec::new()),
        // A few KB of deterministic filler stands in for the kernel module sources, so that
        // a flipped byte lands in compressed data as it would in a real driver.
        ("kernel/nvidia.o_binary".to_string(), 0o644, filler(version, 48 * 1024)),
        (
            "nvidia-smi".to_string(),
            0o755,
            format!("#!/bin/sh\necho 'vgpuctl simulated nvidia-smi {version}'\n").into_bytes(),
        ),
    ];
    if kind == RunKind::HostVgpuKvm {
        files.push((
            "sriov-manage".to_string(),
            0o755,
            b"#!/bin/sh\necho 'vgpuctl simulated sriov-manage'\n".to_vec(),
        ));
        files.push(("init-scripts/".to_string(), 0o755, Vec::new()));
        files.push((
            "init-scripts/systemd/nvidia-vgpu-mgr.service".to_string(),
            0o644,
            VGPU_MGR_UNIT.as_bytes().to_vec(),
        ));
        files.push((
            "init-scripts/systemd/nvidia-vgpud.service".to_string(),
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
    // GNU tar of `.` (what makeself runs in the target directory): `./` first, `./`-prefixed names.
    let root = [("./".to_string(), 0o755, Vec::new())];
    let named: Vec<(String, u32, Vec<u8>)> = files
        .iter()
        .map(|(n, m, d)| (format!("./{n}"), *m, d.clone()))
        .collect();
    for (name, mode, data) in root.iter().chain(named.iter()) {
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
