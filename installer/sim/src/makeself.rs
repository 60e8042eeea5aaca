//! Reading a makeself archive (NVIDIA's `.run` is one) the way its own header script does, so
//! the simulated host takes an archive built by the real `makeself` tool as a real host would.
//!
//! The layout, from makeself's `makeself-header.sh` (Debian package `makeself`, 2.4.5): a
//! `#!/bin/sh` script whose first lines assign `CRCsum`, `MD5`, `SHA`, `label`, `script`,
//! `targetdir`, `filesizes`, `totalsize` and `skip`; the payload starts after the first `skip`
//! lines (`offset=$(head -n "$skip" "$0" | wc -c)`) and is `totalsize` bytes, one compressed
//! tar per entry of `filesizes`. `--check` (`MS_Check`) compares the file's size with
//! `offset + totalsize` ("Unexpected archive size."), then for each part its SHA-256 (unless the
//! field is all zeros), its MD5 (likewise), and its POSIX `cksum` CRC only when neither digest
//! was checked; a mismatch exits 2. Older makeself releases (2.1.x, which NVIDIA's own tool
//! derives from) write the line count into `head -n N` instead of a `skip=` variable and have no
//! `totalsize`: both are read too (a guess from makeself's history). NVIDIA's label reads
//! `NVIDIA Accelerated Graphics Driver for Linux-x86_64 <version>`, as its `.run` prints it
//! ("Uncompressing NVIDIA Accelerated Graphics Driver for Linux-x86_64 550.163.01..." in public
//! install logs; an old NVIDIA header posted publicly assigns `skip=`, `CRCsum=`, `MD5=`,
//! `label="NVIDIA Accelerated Graphics Driver for Linux-ia64 1.0-5336"`, `script=` and
//! `targetdir=` unquoted).

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

/// One extracted entry: (path, mode, bytes); a directory's path ends in `/`.
pub type Entry = (String, u32, Vec<u8>);

/// What the header of a makeself archive says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInfo {
    /// `label`: NVIDIA's reads "NVIDIA Accelerated Graphics Driver for Linux-x86_64 <version>".
    pub label: String,
    /// The driver version: the label's last word, when it looks like one.
    pub version: String,
    /// `targetdir`: the directory the payload is extracted into.
    pub target: String,
    /// `script`: what runs after extraction (`./nvidia-installer`).
    pub script: String,
    /// `filesizes`: the size of each compressed part.
    pub filesizes: Vec<usize>,
    /// `totalsize` (their sum when the header has none).
    pub size: usize,
    pub crc: Vec<String>,
    pub md5: Vec<String>,
    pub sha256: Vec<String>,
    /// Byte offset of the payload (the length of the first `skip` lines).
    pub payload_offset: usize,
}

/// The version at the end of a label (`... Linux-x86_64 550.163.02` -> `550.163.02`).
pub fn version_from_label(label: &str) -> Option<String> {
    let last = label.split_whitespace().last()?;
    let ok = last.split('.').count() >= 2
        && last
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    ok.then(|| last.to_string())
}

/// Parse the header (and verify nothing).
pub fn parse(bytes: &[u8]) -> Result<RunInfo> {
    if !bytes.starts_with(b"#!/bin/sh") && !bytes.starts_with(b"#! /bin/sh") {
        bail!("not a self-extracting archive: no #!/bin/sh header");
    }
    // The assignments come within the first lines; the header script is ~20-30 KB.
    let head_len = bytes.len().min(64 * 1024);
    let head = String::from_utf8_lossy(&bytes[..head_len]);
    let field = |key: &str| -> Option<String> {
        let pre = format!("{key}=");
        head.lines()
            .find_map(|l| l.strip_prefix(&pre))
            .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
    };
    let words = |key: &str| -> Vec<String> {
        field(key)
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let (Some(label), Some(target)) = (field("label"), field("targetdir")) else {
        bail!("not a makeself archive: its header lacks label= or targetdir=");
    };
    let skip: usize = match field("skip") {
        Some(v) => v.parse().context("skip= is not a number")?,
        None => old_skip(&head).context("not a makeself archive: no skip= and no `head -n N`")?,
    };
    let mut offset = 0;
    for _ in 0..skip {
        let nl = bytes[offset..]
            .iter()
            .position(|&b| b == b'\n')
            .context("the archive is shorter than its header")?;
        offset += nl + 1;
    }
    // Very old headers (NVIDIA's of the 1.0 series: `skip=`, `CRCsum=`, `MD5=`, `label=`,
    // `script=`, `targetdir=`) have no `filesizes`: one part, the rest of the file.
    let filesizes: Vec<usize> = match field("filesizes") {
        Some(sizes) => sizes
            .split_whitespace()
            .map(|n| n.parse().context("filesizes= is not a list of numbers"))
            .collect::<Result<_>>()?,
        None => vec![bytes.len() - offset],
    };
    let size = match field("totalsize") {
        Some(v) => v.parse().context("totalsize= is not a number")?,
        None => filesizes.iter().sum(),
    };
    Ok(RunInfo {
        version: version_from_label(&label).unwrap_or_default(),
        label,
        target,
        script: field("script").unwrap_or_default(),
        filesizes,
        size,
        crc: words("CRCsum"),
        md5: words("MD5"),
        sha256: words("SHA"),
        payload_offset: offset,
    })
}

/// makeself 2.1.x: `offset=\`head -n 403 "$1" | wc -c | tr -d " "\``.
fn old_skip(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let rest = &l[l.find("head -n ")? + "head -n ".len()..];
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().ok()
    })
}

fn zero(d: &str) -> bool {
    d.is_empty() || d.chars().all(|c| c == '0')
}

/// What `--check` does: the size, then each part's SHA-256, MD5 or CRC, with makeself's words.
pub fn verify(bytes: &[u8]) -> Result<RunInfo> {
    let info = parse(bytes)?;
    if bytes.len() != info.payload_offset + info.size {
        bail!(
            "Unexpected archive size. (payload {} bytes, the header says {}: truncated or \
             corrupted download)",
            bytes.len().saturating_sub(info.payload_offset),
            info.size
        );
    }
    let mut off = info.payload_offset;
    for (i, &len) in info.filesizes.iter().enumerate() {
        let part = bytes
            .get(off..off + len)
            .context("Unexpected archive size. (a part runs past the end)")?;
        let mut checked = false;
        if let Some(want) = info.sha256.get(i).filter(|d| !zero(d)) {
            let got = hex::encode(Sha256::digest(part));
            if &got != want {
                bail!("Error in SHA256 checksums: {got} is different from {want}");
            }
            checked = true;
        }
        if let Some(want) = info.md5.get(i).filter(|d| !zero(d)) {
            let got = hex::encode(md5(part));
            if &got != want {
                bail!("Error in MD5 checksums: {got} is different from {want}");
            }
            checked = true;
        }
        if !checked {
            if let Some(want) = info.crc.get(i).filter(|d| !zero(d)) {
                let got = cksum(part).to_string();
                if &got != want {
                    bail!("Error in checksums: {got} is different from {want}");
                }
            }
        }
        off += len;
    }
    Ok(info)
}

/// The files of a verified archive as `-x` extracts them: (path under `targetdir/`, mode, bytes).
/// Directories end in `/`; symbolic links and special files are left out.
pub fn extract(bytes: &[u8]) -> Result<(RunInfo, Vec<Entry>)> {
    let info = verify(bytes)?;
    let mut out = vec![(format!("{}/", info.target), 0o755, Vec::new())];
    let mut off = info.payload_offset;
    for &len in &info.filesizes {
        let raw = decompress(&bytes[off..off + len])?;
        for (name, mode, data) in untar(&raw)? {
            let rel = name.trim_start_matches("./").trim_start_matches('/');
            if rel.is_empty() || rel.split('/').any(|c| c == "..") {
                continue;
            }
            out.push((format!("{}/{rel}", info.target), mode, data));
        }
        off += len;
    }
    Ok((info, out))
}

/// makeself compresses with gzip by default (`--nocomp`: a plain tar). Others are named.
fn decompress(part: &[u8]) -> Result<Vec<u8>> {
    let mut raw = Vec::new();
    match part {
        [0x1f, 0x8b, ..] => {
            std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(part), &mut raw)
                .context("the payload is not valid gzip")?;
        }
        _ if part.get(257..262) == Some(b"ustar") => raw = part.to_vec(),
        [0xfd, b'7', b'z', b'X', b'Z', ..] => bail!("an xz payload (not played by the simulator)"),
        [b'B', b'Z', b'h', ..] => bail!("a bzip2 payload (not played by the simulator)"),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => bail!("a zstd payload (not played by the simulator)"),
        _ => bail!("the payload is neither gzip nor tar"),
    }
    Ok(raw)
}

/// The entries of a tar (ustar, GNU long names, pax `path`): regular files and directories.
pub fn untar(raw: &[u8]) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut off = 0;
    let mut long_name: Option<String> = None;
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
        let size = usize::from_str_radix(&text(124..136), 8).context("bad tar size")?;
        let mode = u32::from_str_radix(&text(100..108), 8).unwrap_or(0o644) & 0o7777;
        let start = off + 512;
        let data = raw
            .get(start..start + size)
            .context("a tar entry runs past the end")?;
        off = start + size.div_ceil(512) * 512;
        let mut name = text(0..100);
        if &h[257..262] == b"ustar" && h[345] != 0 {
            name = format!("{}/{name}", text(345..500));
        }
        match h[156] {
            b'L' => {
                let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                long_name = Some(String::from_utf8_lossy(&data[..end]).into_owned());
                continue;
            }
            b'x' => {
                long_name = pax_path(data).or(long_name);
                continue;
            }
            b'g' => continue,
            _ => {}
        }
        let name = long_name.take().unwrap_or(name);
        match h[156] {
            b'0' | 0 | b'7' => out.push((name, mode, data.to_vec())),
            b'5' => out.push((format!("{}/", name.trim_end_matches('/')), mode, Vec::new())),
            _ => {}
        }
    }
    Ok(out)
}

/// `path=` of a pax extended header (records `<len> <key>=<value>\n`).
fn pax_path(data: &[u8]) -> Option<String> {
    String::from_utf8_lossy(data).lines().find_map(|l| {
        l.split_once(' ')?
            .1
            .strip_prefix("path=")
            .map(str::to_string)
    })
}

/// POSIX `cksum`: CRC-32 (polynomial 0x04C11DB7, most significant bit first) over the data and
/// then its length, complemented.
pub fn cksum(data: &[u8]) -> u32 {
    fn step(crc: u32, b: u8) -> u32 {
        let mut c = crc ^ ((b as u32) << 24);
        for _ in 0..8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ 0x04C1_1DB7
            } else {
                c << 1
            };
        }
        c
    }
    let mut crc = data.iter().fold(0u32, |c, &b| step(c, b));
    let mut n = data.len() as u64;
    while n > 0 {
        crc = step(crc, (n & 0xff) as u8);
        n >>= 8;
    }
    !crc
}

/// MD5 (RFC 1321), for makeself's `MD5=` field.
pub fn md5(data: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32)
        .collect();
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_le_bytes());
    let (mut a0, mut b0, mut c0, mut d0) = (
        0x6745_2301u32,
        0xefcd_ab89u32,
        0x98ba_dcfeu32,
        0x1032_5476u32,
    );
    for chunk in msg.chunks(64) {
        let m: Vec<u32> = chunk
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        a0 = a0.wrapping_add(a);
        b0 = b0.wrapping_add(b);
        c0 = c0.wrapping_add(c);
        d0 = d0.wrapping_add(d);
    }
    let mut out = [0u8; 16];
    for (i, w) in [a0, b0, c0, d0].iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver_pkg::{self, RunKind};
    use crate::seam::Cmd;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::process::Command;

    const VER: &str = "550.163.02";

    /// A `.run` built by the real `makeself` (Debian package `makeself`, installed by
    /// scripts/test-deps) from the simulated payload, with NVIDIA's label and script.
    fn real_makeself(dir: &Path, name: &str, extra: &[&str]) -> std::path::PathBuf {
        let target = format!("NVIDIA-Linux-x86_64-{VER}-vgpu-kvm");
        let src = dir.join(&target);
        for (rel, mode, data) in driver_pkg::payload_files(VER, RunKind::HostVgpuKvm) {
            let p = src.join(&rel);
            if rel.ends_with('/') {
                std::fs::create_dir_all(&p).unwrap();
                continue;
            }
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, data).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        let out_file = dir.join(name);
        let o = Command::new("makeself")
            .args(extra)
            .arg("--nox11")
            .arg(&src)
            .arg(&out_file)
            .arg(format!(
                "NVIDIA Accelerated Graphics Driver for Linux-x86_64 {VER}"
            ))
            .arg("./nvidia-installer")
            .output()
            .expect("the real makeself must be installed: run scripts/test-deps");
        assert!(o.status.success(), "makeself: {o:?}");
        out_file
    }

    fn sh_check(run: &Path) -> std::process::Output {
        Command::new("sh").arg(run).arg("--check").output().unwrap()
    }

    /// recorded-behaviour.md §7: an archive made by the real makeself is read, checked against
    /// its embedded SHA-256, MD5 and CRC as makeself's own `--check` does, and its version comes
    /// from its label.
    #[test]
    fn a_real_makeself_archive_is_parsed_and_checked_as_its_own_header_does() {
        let d = tempfile::tempdir().unwrap();
        for (name, extra, digest) in [
            ("sha.run", &["--sha256"][..], "SHA256"),
            ("md5.run", &[][..], "MD5"),
            ("crc.run", &["--nomd5"][..], "checksums:"),
        ] {
            let run = real_makeself(d.path(), name, extra);
            let bytes = std::fs::read(&run).unwrap();
            let info = verify(&bytes).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(info.version, VER);
            assert_eq!(info.target, format!("NVIDIA-Linux-x86_64-{VER}-vgpu-kvm"));
            assert_eq!(info.script, "./nvidia-installer");
            assert_eq!(info.payload_offset + info.size, bytes.len());
            assert!(sh_check(&run).status.success(), "{name}: its own --check");
            let (_, files) = extract(&bytes).unwrap();
            let inst = files
                .iter()
                .find(|(n, _, _)| n.ends_with("/nvidia-installer"))
                .unwrap();
            assert_eq!(inst.1 & 0o111, 0o111, "{name}: mode kept");

            // One flipped payload byte: both makeself's --check and ours refuse, same words.
            let mut bad = bytes.clone();
            let i = info.payload_offset + info.size / 2;
            bad[i] ^= 0x40;
            let bad_run = d.path().join(format!("bad-{name}"));
            std::fs::write(&bad_run, &bad).unwrap();
            let theirs = sh_check(&bad_run);
            assert_eq!(theirs.status.code(), Some(2), "{name}: {theirs:?}");
            let err = format!("{:#}", verify(&bad).unwrap_err());
            assert!(err.contains(digest), "{name}: {err}");
            let their_err = String::from_utf8_lossy(&theirs.stderr);
            assert!(their_err.contains(digest), "{name}: {their_err}");
            // A cut file: "Unexpected archive size." from both.
            let cut = d.path().join(format!("cut-{name}"));
            std::fs::write(&cut, &bytes[..bytes.len() - 7]).unwrap();
            assert!(
                String::from_utf8_lossy(&sh_check(&cut).stderr).contains("Unexpected archive size")
            );
            assert!(
                format!("{:#}", verify(&bytes[..bytes.len() - 7]).unwrap_err())
                    .contains("Unexpected archive size")
            );
        }
    }

    /// The simulator's own archive is header-compatible with makeself: makeself's `MS_Check`,
    /// given our fields, accepts our payload (the real header script does the checking here).
    #[test]
    fn the_simulators_own_archive_passes_the_real_makeself_check() {
        let d = tempfile::tempdir().unwrap();
        let real = std::fs::read(real_makeself(d.path(), "real.run", &["--sha256"])).unwrap();
        let ours = driver_pkg::run_bytes(VER, RunKind::HostVgpuKvm);
        let (ri, oi) = (parse(&real).unwrap(), parse(&ours).unwrap());
        assert_eq!(
            (oi.label.as_str(), oi.target.as_str()),
            (ri.label.as_str(), ri.target.as_str())
        );
        // The real header with our fields, then our payload.
        let head = String::from_utf8_lossy(&real[..ri.payload_offset]).into_owned();
        let set = |h: String, key: &str, v: &str| -> String {
            h.lines()
                .map(|l| {
                    if l.starts_with(&format!("{key}=")) {
                        format!("{key}=\"{v}\"")
                    } else {
                        l.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n"
        };
        let mut h = head;
        for (k, v) in [
            ("CRCsum", oi.crc.join(" ")),
            ("MD5", oi.md5.join(" ")),
            ("SHA", oi.sha256.join(" ")),
            ("filesizes", oi.size.to_string()),
            ("totalsize", oi.size.to_string()),
        ] {
            h = set(h, k, &v);
        }
        let mut spliced = h.into_bytes();
        spliced.extend_from_slice(&ours[oi.payload_offset..]);
        let p = d.path().join("spliced.run");
        std::fs::write(&p, &spliced).unwrap();
        let o = sh_check(&p);
        assert!(o.status.success(), "{o:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("SHA256 checksums are OK"));
        assert!(String::from_utf8_lossy(&o.stderr).contains("MD5 checksums are OK"));
        // And makeself's own extraction of it gives our files.
        let x = d.path().join("x");
        let o = Command::new("sh")
            .arg(&p)
            .args(["--noexec", "--target"])
            .arg(&x)
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        assert!(x
            .join("init-scripts/systemd/nvidia-vgpu-mgr.service")
            .is_file());
    }

    /// The simulated host plays `--check`, `--info`, `--list`, `-x` and the install on a real
    /// makeself archive, the version read from its label.
    #[test]
    fn the_simulated_host_takes_a_real_makeself_archive() {
        let d = tempfile::tempdir().unwrap();
        let h = crate::open(
            &d.path().join("root"),
            "l40s-vfio",
            &["nouveau_fbcon=0".into()],
        )
        .unwrap();
        // Renamed: nothing in the file name tells the version.
        real_makeself(d.path(), "real.run", &["--sha256"]);
        std::fs::copy(d.path().join("real.run"), h.path("root/driver.run")).unwrap();
        let run = |args: &[&str]| {
            h.run(&Cmd::new("/root/driver.run").args(args.iter().copied()))
                .unwrap()
        };
        assert!(run(&["--check"]).success());
        let info = run(&["--info"]);
        assert!(
            info.stdout.contains(&format!(
                "Identification: NVIDIA Accelerated Graphics Driver for Linux-x86_64 {VER}"
            )),
            "{info:?}"
        );
        assert!(
            info.stdout
                .contains("Target directory: NVIDIA-Linux-x86_64-"),
            "{info:?}"
        );
        let list = run(&["--list"]);
        assert!(list.stdout.contains("./nvidia-installer"), "{list:?}");
        assert!(list
            .stdout
            .contains("./init-scripts/systemd/nvidia-vgpu-mgr.service"));
        assert!(run(&["-x"]).success());
        let inst = h.path(&format!(
            "root/NVIDIA-Linux-x86_64-{VER}-vgpu-kvm/nvidia-installer"
        ));
        assert_eq!(
            std::fs::metadata(&inst).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let mut bad = std::fs::read(h.path("root/driver.run")).unwrap();
        let n = bad.len();
        bad[n - 300] ^= 1;
        std::fs::write(h.path("root/bad.run"), &bad).unwrap();
        let chk = h.run(&Cmd::new("/root/bad.run").arg("--check")).unwrap();
        assert_eq!(chk.status, 2, "{chk:?}");
        assert!(chk.stderr.contains("Error in SHA256 checksums"), "{chk:?}");
        assert!(h
            .run(&Cmd::new("modprobe").args(["-r", "nouveau"]))
            .unwrap()
            .success());
        let out = run(&["--dkms", "-s"]);
        assert!(out.success(), "{out:?}");
        assert!(out.stdout.contains(&format!("(version: {VER})")), "{out:?}");
    }

    #[test]
    fn digests_match_the_reference_values() {
        // RFC 1321's test suite; `printf abc | cksum` prints 1219131554.
        assert_eq!(hex::encode(md5(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex::encode(md5(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            hex::encode(md5(&[b'a'; 1000])),
            "cabe45dcc9ae5b66ba86600cca6b8ba8"
        );
        assert_eq!(cksum(b"abc"), 1_219_131_554);
        assert_eq!(cksum(b""), 4_294_967_295);
    }

    #[test]
    fn versions_come_from_nvidia_labels() {
        assert_eq!(
            version_from_label("NVIDIA Accelerated Graphics Driver for Linux-x86_64 550.163.02")
                .as_deref(),
            Some("550.163.02")
        );
        assert_eq!(
            version_from_label("NVIDIA Accelerated Graphics Driver for Linux-x86_64 580.65")
                .as_deref(),
            Some("580.65")
        );
        assert_eq!(version_from_label("Some archive"), None);
        assert_eq!(version_from_label("v1"), None);
    }
}
