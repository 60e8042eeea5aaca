//! Reading a profile file: TOML syntax, the shape of [`Profile`] (unknown keys rejected), then
//! every rule that needs no host. Each error carries the file, the line and column, the field
//! path and the reason, and renders like a compiler's:
//! `profiles/a40.toml:7:9: gpus[0].count: must be between 1 and 64`.
//!
//! Host-dependent checks (the type exists on this GPU, the count fits, the driver file exists)
//! belong to the planner, which reports through the same [`ProfileError`].

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::exit::Failure;
use crate::pci::{check_mdev_parent, is_safe_name, is_uuid, PciAddr};
use crate::profile::{CloudpodsConfig, DriverConfig, GpuRequest, NovaConfig, Profile, SavedVgpu};

/// Most vGPUs one physical GPU can hold in any NVIDIA profile table (32 VFs on Ampere/Ada;
/// 1B types on Maxwell stop at 16 per GPU): a larger count is a typo.
pub const MAX_COUNT: u32 = 64;

/// An error in a profile, located in its file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ProfileError {
    pub file: String,
    /// 1-based; 0 when the position is unknown (e.g. a missing section).
    pub line: usize,
    /// 1-based, in characters.
    pub col: usize,
    /// `gpus[1].count`; empty for syntax errors outside any field.
    pub field: String,
    pub reason: String,
}

impl ProfileError {
    fn render(&self) -> String {
        let mut s = self.file.clone();
        if self.line > 0 {
            s.push_str(&format!(":{}:{}", self.line, self.col));
        }
        s.push_str(": ");
        if !self.field.is_empty() {
            s.push_str(&self.field);
            s.push_str(": ");
        }
        s.push_str(&self.reason);
        s
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn path_string(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(text.len());
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..pos].chars().count() + 1)
}

/// The deepest field whose key or scalar value covers byte `pos`.
fn path_at(v: &DeValue, pos: usize, path: &mut Vec<Seg>) -> bool {
    match v {
        DeValue::Table(t) => {
            for (k, val) in t.iter() {
                path.push(Seg::Key(k.get_ref().to_string()));
                if k.span().contains(&pos) || path_at(val.get_ref(), pos, path) {
                    return true;
                }
                if val.span().contains(&pos) {
                    return true;
                }
                path.pop();
            }
            false
        }
        DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                if path_at(item.get_ref(), pos, path) || item.span().contains(&pos) {
                    return true;
                }
                path.pop();
            }
            false
        }
        _ => false,
    }
}

fn span_of(doc: &Spanned<DeTable>, path: &[Seg]) -> Option<Range<usize>> {
    let mut span = doc.span();
    let mut cur: Option<&DeValue> = None;
    let mut table: Option<&DeTable> = Some(doc.get_ref());
    for seg in path {
        let next = match (seg, table, cur) {
            (Seg::Key(k), Some(t), _) => t.get(k.as_str()),
            (Seg::Index(i), _, Some(DeValue::Array(a))) => a.get(*i),
            _ => None,
        }?;
        span = next.span();
        cur = Some(next.get_ref());
        table = next.get_ref().as_table();
    }
    Some(span)
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
    doc: Option<Spanned<DeTable<'a>>>,
    errors: Vec<ProfileError>,
}

/// Where `path` is written: the field itself, or its closest ancestor that is in the file
/// (down to `shallowest` segments; 0 allows the whole document).
fn locate(
    doc: Option<&Spanned<DeTable>>,
    text: &str,
    path: &[Seg],
    shallowest: usize,
) -> (usize, usize) {
    doc.and_then(|d| {
        (shallowest.min(path.len())..=path.len())
            .rev()
            .find_map(|n| span_of(d, &path[..n]))
    })
    .map_or((0, 0), |s| line_col(text, s.start))
}

/// `gpus[1].uuids[0]` -> its segments (the inverse of `path_string`).
fn parse_path(field: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in field.split('.').filter(|p| !p.is_empty()) {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            out.push(Seg::Key(rest[..i].to_string()));
            rest = &rest[i..];
            while let Some(r) = rest.strip_prefix('[') {
                let Some((n, tail)) = r.split_once(']') else {
                    break;
                };
                if let Ok(n) = n.parse() {
                    out.push(Seg::Index(n));
                }
                rest = tail;
            }
        } else {
            out.push(Seg::Key(rest.to_string()));
        }
    }
    out
}

/// A loaded profile's file name and text, kept so that the checks made later against the host
/// (the planner's, the driver's, CloudPods') report `file:line:col: field: reason` like the
/// loader does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Located {
    pub file: String,
    /// None when the profile has no file (the wizard's answers): errors name no line.
    pub text: Option<String>,
}

impl Located {
    pub fn new(file: impl Into<String>, text: impl Into<String>) -> Located {
        Located {
            file: file.into(),
            text: Some(text.into()),
        }
    }

    /// An error at `field` (`gpus[1].count`, `driver.url`, ...), located in the file.
    pub fn error(&self, field: &str, reason: impl Into<String>) -> ProfileError {
        let path = parse_path(field);
        let (line, col) = match &self.text {
            // A section the file does not have gets no line (not the file's first).
            Some(t) => locate(DeTable::parse(t).ok().as_ref(), t, &path, 1),
            None => (0, 0),
        };
        ProfileError {
            file: self.file.clone(),
            line,
            col,
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

impl Ctx<'_> {
    fn err(&mut self, path: &[Seg], reason: impl Into<String>) {
        let (line, col) = locate(self.doc.as_ref(), self.text, path, 0);
        self.errors.push(ProfileError {
            file: self.file.to_string(),
            line,
            col,
            field: path_string(path),
            reason: reason.into(),
        });
    }
}

fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

/// A vGPU type as a profile may name it: `A40-24Q`, `NVIDIA A40-24Q`, `GRID T4-16Q`,
/// `A100-1-5C`, `RTX6000-Ada-8Q`, `nvidia-565`, or a bare id `565` (vendor-specific VFIO).
pub fn is_plausible_vgpu_type(t: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.len() <= 6 && s.bytes().all(|b| b.is_ascii_digit());
    if digits(t) || t.strip_prefix("nvidia-").is_some_and(digits) {
        return true;
    }
    let name = t
        .strip_prefix("NVIDIA ")
        .or_else(|| t.strip_prefix("GRID "))
        .unwrap_or(t);
    let Some((model, size)) = name.rsplit_once('-') else {
        return false;
    };
    // `<GB><series>`: digits, then a series letter A/B/C/Q and at most a few more letters
    // (`5CME`): `24GB` or `24` are the usual mistakes.
    let nd = size.bytes().take_while(u8::is_ascii_digit).count();
    let series = &size[nd..];
    let series_ok = nd > 0
        && nd <= 3
        && !series.is_empty()
        && series.len() <= 4
        && series.bytes().all(|b| b.is_ascii_alphabetic())
        && matches!(
            series.as_bytes()[0].to_ascii_uppercase(),
            b'A' | b'B' | b'C' | b'Q'
        );
    let model_ok = !model.is_empty()
        && model.len() <= 40
        && model.as_bytes()[0].is_ascii_alphanumeric()
        && model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b' ')
        && !model.ends_with([' ', '-'])
        && !model.contains("  ");
    series_ok && model_ok
}

/// Why fixed UUIDs need a `select` that names one GPU: a UUID names one device, so the same list
/// cannot go to several GPUs (every GPU after the first would fail with "File exists").
pub const UUIDS_ONE_GPU: &str = "fixed UUIDs name the vGPUs of one GPU, but this entry selects \
     several GPUs: select one GPU by its PCI address (one [[gpus]] entry per GPU, each with its own \
     UUIDs), or drop uuids";

/// A `select` value: "all", a PCI address, or a GPU model such as `A40`, `L40S`, `RTX 6000 Ada`.
pub fn check_select(s: &str) -> Result<(), String> {
    if s == "all" {
        return Ok(());
    }
    if s.contains(':') || s.contains('.') {
        return PciAddr::parse(s).map(|_| ()).map_err(|e| e.to_string());
    }
    let ok = !s.is_empty()
        && s.len() <= 40
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b' ' || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not \"all\", a PCI address like 0000:e8:00.0 or a GPU model like A40"
        ))
    }
}

/// A path inside the host root given in a profile: absolute, no `..`, no NUL or newline.
fn check_abs_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!(
            "{p:?} must be an absolute path (inside the host root)"
        ));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(format!("{p:?} must not contain '..'"));
    }
    if p.contains(['\0', '\n', '\r']) {
        return Err("contains a control character".into());
    }
    Ok(())
}

fn check_driver(cx: &mut Ctx, d: &DriverConfig) {
    let base = [key("driver")];
    let at = |k: &str| vec![key("driver"), key(k)];
    match (&d.url, &d.path) {
        (Some(_), Some(_)) => cx.err(&at("path"), "give either url or path, not both"),
        (None, None) => cx.err(
            &base,
            "needs url (a download link) or path (a file on this host)",
        ),
        _ => {}
    }
    if let Some(url) = &d.url {
        // Never echo the link: its query string is a credential.
        let lower = url.to_ascii_lowercase();
        let rest = if let Some(r) = lower.strip_prefix("https://") {
            Some(r)
        } else if let Some(r) = lower.strip_prefix("http://") {
            if !d.allow_http {
                cx.err(
                    &at("url"),
                    "plain http is refused; use https, or set allow_http = true for an internal mirror",
                );
            }
            Some(r)
        } else {
            cx.err(&at("url"), "must start with https://");
            None
        };
        if let Some(r) = rest {
            let host = r.split(['/', '?', '#']).next().unwrap_or("");
            if host.is_empty() || host.contains(char::is_whitespace) {
                cx.err(&at("url"), "has no host name");
            }
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            cx.err(
                &at("url"),
                "contains whitespace; paste the link exactly as given",
            );
        }
    }
    if let Some(p) = &d.path {
        if let Err(e) = check_abs_path(p) {
            cx.err(&at("path"), e);
        }
    }
    if let Some(h) = &d.sha256 {
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            cx.err(
                &at("sha256"),
                format!(
                    "must be 64 hexadecimal characters (got {})",
                    h.chars().count()
                ),
            );
        }
    }
    for (k, v) in [
        ("signing_key", &d.signing_key),
        ("signing_cert", &d.signing_cert),
    ] {
        if let Some(p) = v {
            if let Err(e) = check_abs_path(p) {
                cx.err(&at(k), e);
            }
        }
    }
    if d.signing_key.is_some() != d.signing_cert.is_some() {
        let missing = if d.signing_key.is_some() {
            "signing_cert"
        } else {
            "signing_key"
        };
        cx.err(&at(missing), "signing_key and signing_cert go together");
    }
}

/// `timeslice_ms` sets the equal-share and fixed-share schedulers' time slice, within the range
/// NVIDIA's guide gives for `RmPVMRL`'s `TT` (1-30 ms; see [`crate::edit::registry_dwords`]).
fn check_scheduler(cx: &mut Ctx, h: &crate::profile::HostPolicy) {
    use crate::profile::Scheduler;
    let Some(ms) = h.timeslice_ms else {
        return;
    };
    let at = [key("host"), key("timeslice_ms")];
    let range = crate::edit::registry_dwords::TIMESLICE_MS;
    match h.scheduler {
        None | Some(Scheduler::BestEffort) => cx.err(
            &at,
            format!(
                "a time slice needs scheduler = \"equal-share\" or \"fixed-share\" (the best-effort \
                 scheduler has none){}",
                if h.scheduler.is_none() { "; set scheduler too" } else { "" }
            ),
        ),
        Some(_) if !range.contains(&ms) => cx.err(
            &at,
            format!(
                "{ms} is outside {}-{} (ms, the range NVIDIA's vGPU user guide allows)",
                range.start(),
                range.end()
            ),
        ),
        Some(_) => {}
    }
}

fn check_nova(cx: &mut Ctx, c: &NovaConfig) {
    if let Err(e) = check_abs_path(&c.conf) {
        cx.err(&[key("nova"), key("conf")], e);
    } else if c.conf.ends_with('/') {
        cx.err(
            &[key("nova"), key("conf")],
            format!(
                "{:?} names a directory; give the fragment's file, e.g. {}",
                c.conf,
                crate::profile::NOVA_CONF
            ),
        );
    }
}

fn check_cloudpods(cx: &mut Ctx, c: &CloudpodsConfig) {
    if let Err(e) = check_abs_path(&c.host_conf) {
        cx.err(&[key("cloudpods"), key("host_conf")], e);
    } else if c.host_conf.ends_with('/') {
        cx.err(
            &[key("cloudpods"), key("host_conf")],
            format!(
                "{:?} names a directory; give the file, e.g. /etc/yunion/host.conf",
                c.host_conf
            ),
        );
    }
}

fn check_gpu(cx: &mut Ctx, i: usize, g: &GpuRequest, seen: &mut Vec<(String, String)>) {
    let at = |k: &str| vec![key("gpus"), Seg::Index(i), key(k)];
    if let Err(e) = check_select(&g.select) {
        cx.err(&at("select"), e);
    }
    if g.vgpu_type.trim().is_empty() {
        cx.err(
            &at("vgpu_type"),
            "must not be empty; run `vgpuctl types` to list them",
        );
    } else if !is_plausible_vgpu_type(&g.vgpu_type) {
        cx.err(
            &at("vgpu_type"),
            format!(
                "{:?} is not a vGPU type name like A40-24Q (model, size in GB, series A/B/C/Q) or an id like nvidia-565; run `vgpuctl types` to list them",
                g.vgpu_type
            ),
        );
    }
    if g.count < 1 || g.count > MAX_COUNT {
        cx.err(&at("count"), format!("must be between 1 and {MAX_COUNT}"));
    }
    // Fixed UUIDs name vGPUs of one GPU: never more of them than vGPUs (whichever `select`).
    if g.uuids.len() > g.count as usize {
        cx.err(
            &at("uuids"),
            format!("has {} UUIDs for count = {}", g.uuids.len(), g.count),
        );
    }
    if g.select.eq_ignore_ascii_case("all") && !g.uuids.is_empty() {
        cx.err(&at("uuids"), UUIDS_ONE_GPU);
    }
    for (j, u) in g.uuids.iter().enumerate() {
        let p = vec![key("gpus"), Seg::Index(i), key("uuids"), Seg::Index(j)];
        if !is_uuid(u) {
            cx.err(
                &p,
                format!("{u:?} is not a UUID like 2f82ee72-3ac5-4615-9c0b-327c12e8c83d"),
            );
            continue;
        }
        let lu = u.to_ascii_lowercase();
        if let Some((_, first)) = seen.iter().find(|(s, _)| *s == lu) {
            let first = first.clone();
            cx.err(&p, format!("{u} is already used at {first}"));
        } else {
            seen.push((lu, path_string(&p)));
        }
    }
}

fn check_saved(cx: &mut Ctx, i: usize, v: &SavedVgpu, seen: &mut Vec<(String, String)>) {
    let at = |k: &str| vec![key("vgpus"), Seg::Index(i), key(k)];
    if !is_uuid(&v.uuid) {
        cx.err(&at("uuid"), format!("{:?} is not a UUID", v.uuid));
    } else {
        let lu = v.uuid.to_ascii_lowercase();
        let here = path_string(&at("uuid"));
        if let Some((_, first)) = seen.iter().find(|(s, _)| *s == lu) {
            let first = first.clone();
            cx.err(
                &at("uuid"),
                format!("{} is already used at {first}", v.uuid),
            );
        } else {
            seen.push((lu, here));
        }
    }
    if !is_safe_name(&v.type_id) {
        cx.err(
            &at("type_id"),
            format!("{:?} is not a type id like nvidia-565 or 565", v.type_id),
        );
    }
    if v.type_name.trim().is_empty() {
        cx.err(&at("type_name"), "must not be empty");
    }
    if let Err(e) = check_mdev_parent(&v.parent) {
        cx.err(&at("parent"), e);
    }
    if let Some(g) = &v.gpu {
        if let Err(e) = PciAddr::parse(g) {
            cx.err(&at("gpu"), e.to_string());
        }
    }
    if !matches!(v.interface.as_str(), "mdev" | "vendor-vfio") {
        cx.err(
            &at("interface"),
            format!("{:?} is neither \"mdev\" nor \"vendor-vfio\"", v.interface),
        );
    }
}

/// Parse and check a profile; every problem found, in file order. Empty when it is valid.
pub fn check(text: &str, file: &str) -> Result<Profile, Vec<ProfileError>> {
    let mut cx = Ctx {
        file,
        text,
        doc: None,
        errors: Vec::new(),
    };
    match DeTable::parse(text) {
        Ok(doc) => cx.doc = Some(doc),
        Err(e) => {
            let (line, col) = e.span().map_or((0, 0), |s| line_col(text, s.start));
            return Err(vec![ProfileError {
                file: file.to_string(),
                line,
                col,
                field: String::new(),
                reason: format!("not valid TOML: {}", e.message().trim()),
            }]);
        }
    }
    let profile: Profile = match toml::from_str(text) {
        Ok(p) => p,
        Err(e) => {
            let pos = e.span().map(|s| s.start);
            let mut path = Vec::new();
            if let (Some(pos), Some(doc)) = (pos, &cx.doc) {
                let root = DeValue::Table(doc.get_ref().clone());
                path_at(&root, pos, &mut path);
            }
            let (line, col) = pos.map_or((0, 0), |p| line_col(text, p));
            let mut reason = e.message().trim().to_string();
            // An unknown key's error points at the key: name it as the field.
            if let Some(rest) = reason.strip_prefix("unknown field ") {
                reason = format!(
                    "unknown key {}",
                    rest.replacen(", expected", "; expected", 1)
                );
            }
            reason = reason
                .replace("expected u32", "expected a whole number")
                .replace("expected a boolean", "expected true or false");
            return Err(vec![ProfileError {
                file: file.to_string(),
                line,
                col,
                field: path_string(&path),
                reason,
            }]);
        }
    };
    check_scheduler(&mut cx, &profile.host);
    if let Some(d) = &profile.driver {
        check_driver(&mut cx, d);
    }
    let mut seen = Vec::new();
    for (i, g) in profile.gpus.iter().enumerate() {
        check_gpu(&mut cx, i, g, &mut seen);
    }
    // PFs whose VFs restore enables: each becomes a sysfs path and a program argument.
    for (i, pf) in profile.sriov.iter().enumerate() {
        if let Err(e) = PciAddr::parse(pf) {
            cx.err(
                &[key("sriov"), Seg::Index(i)],
                format!("{e}; give the GPU's PCI address like 0000:e8:00.0"),
            );
        }
    }
    for (i, pf) in profile.mixed_size.iter().enumerate() {
        if let Err(e) = PciAddr::parse(pf) {
            cx.err(
                &[key("mixed_size"), Seg::Index(i)],
                format!("{e}; give the GPU's PCI address like 0000:e8:00.0"),
            );
        }
    }
    let mut seen_saved = Vec::new();
    for (i, v) in profile.vgpus.iter().enumerate() {
        check_saved(&mut cx, i, v, &mut seen_saved);
    }
    if let Some(c) = &profile.cloudpods {
        check_cloudpods(&mut cx, c);
    }
    if let Some(c) = &profile.nova {
        check_nova(&mut cx, c);
    }
    if cx.errors.is_empty() {
        Ok(normalize(profile))
    } else {
        cx.errors.sort_by_key(|e| (e.line == 0, e.line, e.col));
        Err(cx.errors)
    }
}

/// The forms the kernel uses, so that every later comparison with sysfs names holds: UUIDs in
/// lowercase (the kernel names mdev devices that way), PCI addresses in full lowercase form
/// (`e8:00.0` -> `0000:e8:00.0`). Runs on valid profiles only, so every address parses.
fn normalize(mut p: Profile) -> Profile {
    let addr = |s: &mut String| {
        if let Ok(a) = PciAddr::parse(s) {
            *s = a.to_string();
        }
    };
    for g in &mut p.gpus {
        if g.select.contains([':', '.']) {
            addr(&mut g.select);
        }
        for u in &mut g.uuids {
            u.make_ascii_lowercase();
        }
    }
    for s in &mut p.sriov {
        addr(s);
    }
    for s in &mut p.mixed_size {
        addr(s);
    }
    for v in &mut p.vgpus {
        v.uuid.make_ascii_lowercase();
        addr(&mut v.parent);
        if let Some(g) = &mut v.gpu {
            addr(g);
        }
    }
    p
}

impl Profile {
    /// Parse and validate a profile (see [`check`]); the first error, in file order.
    pub fn parse(text: &str, file_name: &str) -> Result<Profile, ProfileError> {
        check(text, file_name).map_err(|mut v| v.swap_remove(0))
    }
}

/// Read and parse the profile at `path` (a file on this machine, not in the host root); any
/// error is bad input (exit 2).
pub fn load_profile(path: &std::path::Path) -> Result<Profile, Failure> {
    load_located(path).map(|(p, _)| p)
}

/// The profile and its text, for errors found later against the host.
pub fn load_located(path: &std::path::Path) -> Result<(Profile, Located), Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("cannot read profile {}: {e}", path.display())))?;
    let file = path.display().to_string();
    let profile = Profile::parse(&text, &file).map_err(Failure::usage_from)?;
    Ok((profile, Located::new(file, text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A40: &str = r#"# The seed's host: 8x A40, Ubuntu 22.04.
[host]
reboot = "prompt"
iommu = "auto"

[driver]
# url = "https://griddownloads.nvidia.com/ems/sec/vGPU17.6/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip?autho=..."
path = "/root/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip"

[[gpus]]
select = "all"
vgpu_type = "A40-24Q"
count = 2
uuids = []
"#;

    fn errs(text: &str) -> Vec<ProfileError> {
        check(text, "profiles/t.toml").unwrap_err()
    }

    fn one(text: &str) -> String {
        let e = errs(text);
        assert_eq!(e.len(), 1, "{e:?}");
        e[0].to_string()
    }

    #[test]
    fn a40_profile_parses() {
        let p = Profile::parse(A40, "profiles/a40.toml").unwrap();
        assert_eq!(p.gpus.len(), 1);
        assert_eq!(p.gpus[0].vgpu_type, "A40-24Q");
        assert_eq!(
            p.driver.unwrap().path.as_deref(),
            Some("/root/NVIDIA-GRID-Linux-KVM-550.163.02-550.163.01-553.74.zip")
        );
    }

    #[test]
    fn count_error_renders_with_file_line_col_field() {
        let t = A40.replace("count = 2", "count = 0");
        let e = Profile::parse(&t, "profiles/a40.toml").unwrap_err();
        assert_eq!(e.field, "gpus[0].count");
        assert_eq!(e.line, 13);
        assert_eq!(e.col, 9);
        assert_eq!(
            e.to_string(),
            "profiles/a40.toml:13:9: gpus[0].count: must be between 1 and 64"
        );
        let t = A40.replace("count = 2", "count = 65");
        assert!(one(&t).ends_with("gpus[0].count: must be between 1 and 64"));
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_path() {
        let t = A40.replace("count = 2", "count = 2\ncuont = 3");
        let e = &errs(&t)[0];
        assert_eq!(e.field, "gpus[0].cuont");
        assert_eq!((e.line, e.col), (14, 1));
        assert!(
            e.reason.contains("unknown key") && e.reason.contains("cuont"),
            "{e}"
        );
        let e = &errs("[hots]\nreboot = \"auto\"\n")[0];
        assert_eq!(e.field, "hots");
        let e = &errs("[host]\nreboot = \"auto\"\nreboto = 1\n")[0];
        assert_eq!(e.field, "host.reboto");
    }

    #[test]
    fn wrong_types_and_enum_values() {
        let e = &errs("[host]\nreboot = \"sometimes\"\n")[0];
        assert_eq!(e.field, "host.reboot");
        assert_eq!((e.line, e.col), (2, 10));
        assert!(e.reason.contains("sometimes"), "{e}");
        let e = &errs(&A40.replace("count = 2", "count = \"2\""))[0];
        assert_eq!(e.field, "gpus[0].count");
        let e = &errs(&A40.replace("count = 2", "count = -1"))[0];
        assert_eq!(e.field, "gpus[0].count");
        let e = &errs(&A40.replace("uuids = []", "uuids = \"x\""))[0];
        assert_eq!(e.field, "gpus[0].uuids");
    }

    #[test]
    fn scheduler_rules() {
        use crate::profile::Scheduler;
        let p = Profile::parse(
            "[host]\nscheduler = \"equal-share\"\ntimeslice_ms = 2\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(p.host.scheduler, Some(Scheduler::EqualShare));
        assert_eq!(p.host.timeslice_ms, Some(2));
        let p = Profile::parse("[host]\nscheduler = \"fixed-share\"\n", "t.toml").unwrap();
        assert_eq!(p.host.scheduler, Some(Scheduler::FixedShare));
        let e = &errs("[host]\nscheduler = \"round-robin\"\n")[0];
        assert_eq!((e.field.as_str(), e.line), ("host.scheduler", 2), "{e}");
        for (t, why) in [
            (
                "scheduler = \"equal-share\"\ntimeslice_ms = 0\n",
                "outside 1-30",
            ),
            (
                "scheduler = \"fixed-share\"\ntimeslice_ms = 31\n",
                "outside 1-30",
            ),
            (
                "scheduler = \"best-effort\"\ntimeslice_ms = 2\n",
                "needs scheduler",
            ),
            ("timeslice_ms = 2\n", "set scheduler too"),
        ] {
            let e = &errs(&format!("[host]\n{t}"))[0];
            assert_eq!(e.field, "host.timeslice_ms", "{e}");
            assert!(e.reason.contains(why), "{e}");
            assert!(e.line >= 2, "{e}");
        }
        let e = &errs("[host]\nscheduler = \"equal-share\"\ntimeslice_ms = -1\n")[0];
        assert_eq!(e.field, "host.timeslice_ms", "{e}");
    }

    #[test]
    fn missing_required_key() {
        let e = &errs("[[gpus]]\nselect = \"all\"\ncount = 1\n")[0];
        assert!(e.reason.contains("vgpu_type"), "{e}");
        assert!(e.field.starts_with("gpus"), "{e}");
        assert!(e.line >= 1, "{e}");
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = &errs("[host\nreboot = 1\n")[0];
        assert_eq!(e.line, 1);
        assert!(e.reason.starts_with("not valid TOML"), "{e}");
        let e = &errs("[host]\nreboot = \"auto\"\nreboot = \"never\"\n")[0];
        assert_eq!(e.line, 3);
    }

    #[test]
    fn select_values() {
        for ok in [
            "all",
            "0000:e8:00.0",
            "e8:00.0",
            "A40",
            "L40S",
            "RTX 6000 Ada",
            "A100",
        ] {
            assert!(check_select(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "0000:e8:00.9",
            "A40;reboot",
            "$(id)",
            "a/b",
            " A40",
        ] {
            assert!(check_select(bad).is_err(), "{bad:?}");
        }
        let t = A40.replace("select = \"all\"", "select = \"0000:e8:00.0/../../..\"");
        assert!(one(&t).contains("gpus[0].select"));
    }

    #[test]
    fn vgpu_type_values() {
        for ok in [
            "A40-24Q",
            "NVIDIA A40-24Q",
            "GRID T4-16Q",
            "A100-1-5C",
            "NVIDIA A100-1-5CME",
            "RTX6000-Ada-8Q",
            "NVIDIA H200X-141C",
            "L40S-48A",
            "A16-1B",
            "nvidia-565",
            "565",
            "1428",
        ] {
            assert!(is_plausible_vgpu_type(ok), "{ok}");
        }
        for bad in [
            "",
            "A40",
            "A40-24",
            "A40-24GB",
            "A40-24X",
            "nvidia-",
            "nvidia-abc",
            "-24Q",
            "A40 -24Q",
            "../A40-24Q",
            "A40-24Q;reboot",
            "A40-24Q\n",
            "1234567",
        ] {
            assert!(!is_plausible_vgpu_type(bad), "{bad:?}");
        }
        let t = A40.replace("A40-24Q", "A40-24GB");
        let e = one(&t);
        assert!(
            e.contains("gpus[0].vgpu_type") && e.contains("vgpuctl types"),
            "{e}"
        );
        let t = A40.replace("\"A40-24Q\"", "\"\"");
        assert!(one(&t).contains("must not be empty"));
    }

    #[test]
    fn uuids_valid_unique_and_bounded() {
        let u1 = "2f82ee72-3ac5-4615-9c0b-327c12e8c83d";
        let u2 = "242e5ea7-90e2-4d6e-afeb-a0b9a656c108";
        // Fixed UUIDs go with one GPU (issue 12, item 6).
        let one_gpu = A40.replace("select = \"all\"", "select = \"0000:e8:00.0\"");
        let t = one_gpu.replace("uuids = []", &format!("uuids = [\"{u1}\", \"nope\"]"));
        let e = &errs(&t)[0];
        assert_eq!(e.field, "gpus[0].uuids[1]");
        assert_eq!((e.line, e.col), (14, 50));
        // Duplicate inside one entry and across entries (case-insensitive).
        let t = one_gpu.replace(
            "uuids = []",
            &format!("uuids = [\"{u1}\", \"{}\"]", u1.to_uppercase()),
        );
        assert!(one(&t).contains("gpus[0].uuids[1]: 2F82EE72"));
        let t = format!(
            "{}\n[[gpus]]\nselect = \"0000:67:00.0\"\nvgpu_type = \"A40-24Q\"\ncount = 1\nuuids = [\"{u1}\"]\n",
            one_gpu.replace("uuids = []", &format!("uuids = [\"{u1}\"]"))
        );
        let e = one(&t);
        assert!(
            e.contains("gpus[1].uuids[0]") && e.contains("already used at gpus[0].uuids[0]"),
            "{e}"
        );
        // More UUIDs than count for one GPU.
        let t = format!(
            "[[gpus]]\nselect = \"0000:67:00.0\"\nvgpu_type = \"A40-24Q\"\ncount = 1\nuuids = [\"{u1}\", \"{u2}\"]\n"
        );
        assert!(one(&t).contains("gpus[0].uuids: has 2 UUIDs for count = 1"));
        // ... whatever the select: a model or "all" used to skip the count check.
        let t = t.replace("0000:67:00.0", "A40");
        assert!(one(&t).contains("gpus[0].uuids: has 2 UUIDs for count = 1"));
        // The same UUIDs handed to every GPU of "all" are refused up front.
        let t = A40.replace("uuids = []", &format!("uuids = [\"{u1}\"]"));
        let e = one(&t);
        assert!(
            e.starts_with(
                "profiles/t.toml:14:9: gpus[0].uuids: fixed UUIDs name the vGPUs of one GPU"
            ),
            "{e}"
        );
    }

    /// Issue 12, items 7 and 8: the kernel's forms, so that names compare equal to sysfs.
    #[test]
    fn uuids_and_addresses_are_normalized() {
        let t = "sriov = [\"e8:00.0\", \"0:C1:0.0\"]\n\
            [[gpus]]\nselect = \"E8:00.0\"\nvgpu_type = \"A40-24Q\"\ncount = 1\n\
            uuids = [\"2F82EE72-3AC5-4615-9C0B-327C12E8C83D\"]\n\
            [[vgpus]]\nuuid = \"242E5EA7-90E2-4D6E-AFEB-A0B9A656C108\"\ntype_id = \"nvidia-565\"\n\
            type_name = \"NVIDIA A40-24Q\"\nparent = \"E8:04.1\"\ngpu = \"e8:00.0\"\ninterface = \"mdev\"\n";
        let p = Profile::parse(t, "f").unwrap();
        assert_eq!(p.sriov, ["0000:e8:00.0", "0000:c1:00.0"]);
        assert_eq!(p.gpus[0].select, "0000:e8:00.0");
        assert_eq!(p.gpus[0].uuids, ["2f82ee72-3ac5-4615-9c0b-327c12e8c83d"]);
        let v = &p.vgpus[0];
        assert_eq!(v.uuid, "242e5ea7-90e2-4d6e-afeb-a0b9a656c108");
        assert_eq!(v.parent, "0000:e8:04.1");
        assert_eq!(v.gpu.as_deref(), Some("0000:e8:00.0"));
        // Models and "all" are left as written.
        let p = Profile::parse(&A40.replace("\"all\"", "\"A40\""), "f").unwrap();
        assert_eq!(p.gpus[0].select, "A40");
    }

    /// Issue 12, item 9: errors found after loading are located like the loader's own.
    #[test]
    fn located_errors_name_file_line_and_field() {
        let src = Located::new("profiles/a40.toml", A40);
        let e = src.error("gpus[0].count", "does not fit");
        assert_eq!(
            e.to_string(),
            "profiles/a40.toml:13:9: gpus[0].count: does not fit"
        );
        let e = src.error("driver.path", "missing");
        assert_eq!((e.line, e.col), (8, 8));
        // A field not written in the file points at its closest written ancestor.
        let e = src.error("driver.sha256", "needed");
        assert_eq!(
            e.to_string(),
            "profiles/a40.toml:6:1: driver.sha256: needed"
        );
        let e = src.error("cloudpods.host_conf", "x");
        assert_eq!(e.to_string(), "profiles/a40.toml: cloudpods.host_conf: x");
        let e = Located {
            file: "the wizard's answers".into(),
            text: None,
        }
        .error("gpus[0].count", "x");
        assert_eq!(e.to_string(), "the wizard's answers: gpus[0].count: x");
    }

    #[test]
    fn driver_rules() {
        let d = |body: &str| format!("[driver]\n{body}\n");
        assert!(one(&d("")).contains("driver: needs url"));
        let e = one(&d("url = \"https://x/a.zip\"\npath = \"/root/a.zip\""));
        assert!(e.contains("driver.path: give either url or path"), "{e}");
        let e = one(&d("url = \"http://mirror.lan/a.zip\""));
        assert!(e.contains("driver.url") && e.contains("allow_http"), "{e}");
        assert!(check(
            &d("url = \"http://mirror.lan/a.zip\"\nallow_http = true"),
            "f"
        )
        .is_ok());
        assert!(one(&d("url = \"ftp://x/a.zip\"")).contains("must start with https://"));
        assert!(one(&d("url = \"https:///a.zip\"")).contains("no host name"));
        assert!(one(&d("path = \"root/a.zip\"")).contains("absolute"));
        assert!(one(&d("path = \"/root/../etc/shadow\"")).contains("'..'"));
        let e = one(&d("path = \"/root/a.zip\"\nsha256 = \"abc\""));
        assert!(
            e.contains("driver.sha256: must be 64 hexadecimal characters (got 3)"),
            "{e}"
        );
        let good = "a".repeat(64);
        assert!(check(
            &d(&format!("path = \"/root/a.zip\"\nsha256 = \"{good}\"")),
            "f"
        )
        .is_ok());
        let e = one(&d("path = \"/a.zip\"\nsigning_key = \"/root/k.key\""));
        assert!(e.contains("driver.signing_cert"), "{e}");
    }

    #[test]
    fn url_is_never_echoed() {
        let secret = "hmac=a5d806ec403b7ddbfe74cd163432eb9a17b0b0eab0eca6ee6c8192ef1a7352b7";
        let t = format!(
            "[driver]\nurl = \"http://griddownloads.nvidia.com/x.zip?autho=st=1~{secret}\"\n"
        );
        let e = one(&t);
        assert!(!e.contains(secret) && !e.contains("autho"), "{e}");
    }

    #[test]
    fn saved_vgpus_rules() {
        let ok = "[[vgpus]]\nuuid = \"242e5ea7-90e2-4d6e-afeb-a0b9a656c108\"\ntype_id = \"nvidia-575\"\ntype_name = \"NVIDIA A40-24A\"\nparent = \"0000:e8:04.0\"\ngpu = \"0000:e8:00.0\"\ninterface = \"mdev\"\n";
        assert!(check(ok, "f").is_ok());
        let mtty = ok
            .replace("0000:e8:04.0", "mtty")
            .replace("nvidia-575", "mtty-2");
        assert!(check(&mtty, "f").is_ok());
        let e = one(&ok.replace("0000:e8:04.0", "../../etc"));
        assert!(e.contains("vgpus[0].parent"), "{e}");
        let e = one(&ok.replace("\"mdev\"", "\"vfio\""));
        assert!(e.contains("vgpus[0].interface"), "{e}");
        let e = one(&ok.replace("nvidia-575", "nvidia/575"));
        assert!(e.contains("vgpus[0].type_id"), "{e}");
        let e = one(&format!("{ok}{ok}"));
        assert!(
            e.contains("vgpus[1].uuid") && e.contains("already used at vgpus[0].uuid"),
            "{e}"
        );
    }

    /// Found by the bad-input corpus (tests/bad-inputs/sriov-entry-dotdot.toml): `sriov`
    /// entries were not checked at all.
    #[test]
    fn sriov_entries_are_pci_addresses() {
        assert!(check("sriov = [\"0000:e8:00.0\", \"e8:00.0\"]\n", "f").is_ok());
        for bad in ["../../../etc", "0000:e8:00.0/../..", "ALL", "$(reboot)", ""] {
            let e = one(&format!("sriov = [\"0000:e8:00.0\", {bad:?}]\n"));
            assert!(e.contains("sriov[1]"), "{bad}: {e}");
        }
    }

    #[test]
    fn nova_section() {
        let c = Profile::parse("[nova]\n", "f").unwrap().nova.unwrap();
        assert_eq!(c.conf, "/etc/nova/nova.conf.d/vgpu.conf");
        assert!(!c.restart);
        let p = Profile::parse(
            "[nova]\nconf = \"/etc/kolla/nova-compute/nova.conf.d/vgpu.conf\"\nrestart = true\n",
            "f",
        )
        .unwrap();
        assert_eq!(
            p.nova,
            Some(NovaConfig {
                conf: "/etc/kolla/nova-compute/nova.conf.d/vgpu.conf".into(),
                restart: true
            })
        );
        assert_eq!(Profile::parse("", "f").unwrap().nova, None);
        let e = one("[nova]\nconf = \"nova.conf.d/vgpu.conf\"\n");
        assert!(
            e.starts_with("profiles/t.toml:2:8: nova.conf: \"nova.conf.d/vgpu.conf\" must be an absolute path"),
            "{e}"
        );
        assert!(one("[nova]\nconf = \"/etc/nova/../shadow\"\n").contains("'..'"));
        assert!(one("[nova]\nconf = \"/etc/nova/nova.conf.d/\"\n").contains("names a directory"));
        assert_eq!(errs("[nova]\nrestart = 1\n")[0].field, "nova.restart");
        assert_eq!(errs("[nova]\nconfig = \"/x\"\n")[0].field, "nova.config");
        let text = toml::to_string_pretty(&p).unwrap();
        assert_eq!(Profile::parse(&text, "f").unwrap(), p);
    }

    #[test]
    fn cloudpods_section() {
        let p = Profile::parse("[cloudpods]\n", "f").unwrap();
        let c = p.cloudpods.unwrap();
        assert_eq!(c.host_conf, "/etc/yunion/host.conf");
        assert!(!c.restart);
        let p = Profile::parse(
            "[cloudpods]\nhost_conf = \"/opt/yunion/host.conf\"\nrestart = true\n",
            "f",
        )
        .unwrap();
        assert_eq!(
            p.cloudpods,
            Some(CloudpodsConfig {
                host_conf: "/opt/yunion/host.conf".into(),
                restart: true
            })
        );
        assert_eq!(Profile::parse("", "f").unwrap().cloudpods, None);
        let e = one("[cloudpods]\nhost_conf = \"etc/yunion/host.conf\"\n");
        assert!(
            e.starts_with("profiles/t.toml:2:13: cloudpods.host_conf: \"etc/yunion/host.conf\" must be an absolute path"),
            "{e}"
        );
        assert!(one("[cloudpods]\nhost_conf = \"/etc/../shadow\"\n").contains("'..'"));
        assert!(one("[cloudpods]\nhost_conf = \"/etc/yunion/\"\n").contains("names a directory"));
        let e = &errs("[cloudpods]\nrestart = \"yes\"\n")[0];
        assert_eq!(e.field, "cloudpods.restart");
        let e = &errs("[cloudpods]\nrestrat = true\n")[0];
        assert_eq!(e.field, "cloudpods.restrat");
        // It survives the active profile's round trip.
        let text = toml::to_string_pretty(&p).unwrap();
        assert_eq!(Profile::parse(&text, "f").unwrap(), p);
    }

    #[test]
    fn all_errors_are_reported_in_file_order() {
        let t = "[driver]\npath = \"rel\"\nsha256 = \"x\"\n[[gpus]]\nselect = \"all\"\nvgpu_type = \"A40\"\ncount = 0\n";
        let e = errs(t);
        let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "driver.path",
                "driver.sha256",
                "gpus[0].vgpu_type",
                "gpus[0].count"
            ]
        );
    }

    #[test]
    fn crlf_profile_positions() {
        let t = A40.replace('\n', "\r\n").replace("count = 2", "count = 0");
        let e = Profile::parse(&t, "p.toml").unwrap_err();
        assert_eq!((e.line, e.col), (13, 9));
    }
}
