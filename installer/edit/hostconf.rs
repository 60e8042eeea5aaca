//! Editor for CloudPods' `/etc/yunion/host.conf` (YAML): the `nvidia_vgpu_pfs:` list.
//!
//! How CloudPods reads it (yunionio/cloudpods): `pkg/hostman/options/options.go` declares
//! `NVIDIAVgpuPFs []string` in the host options; the option parser names it
//! `nvidia_vgpu_pfs` and fills it from host.conf, a YAML map. The host agent passes each entry
//! to `getNvidiaVGpus` (`pkg/hostman/isolated_device/nvidia_vgpu.go`), which opens
//! `/sys/class/mdev_bus/0000:<entry>` and takes every UUID-named child as a vGPU. So an entry
//! is an mdev *parent* written `bb:dd.f` (domain 0 is implied; other domains cannot be
//! expressed), which on SR-IOV GPUs means every VF holding a vGPU, as in the seed's list;
//! and the mdevs must exist before the agent starts. Hosts on the vendor-specific VFIO
//! interface have no mdev parents: CloudPods cannot discover their vGPUs this way.
//!
//! Quoting: CloudPods' docs and the seed write entries unquoted (`- 67:00.0`), which CloudPods'
//! Go YAML reader takes as a string; a YAML 1.1 reader such as PyYAML (Ansible) reads the same
//! text as the base-60 number 4020.0. So a list that already has entries keeps their style,
//! and a list vgpuctl starts is written double-quoted (`- "67:00.0"`), which every reader takes
//! as the string. Only the key's own lines change: every other key, comment, blank line and
//! line ending is kept byte for byte. Block (`- 67:00.0`) and one-line flow
//! (`[67:00.0, 68:00.0]`) forms are both edited in place; a key that is absent is appended.

mod yaml_check;

use super::lines;
use crate::pci::PciAddr;

pub const KEY: &str = "nvidia_vgpu_pfs";

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostConfError {
    #[error("host.conf:{line}: {reason}; fix the file by hand and run again")]
    Unsupported { line: usize, reason: String },
    #[error("{value:?} cannot be a CloudPods nvidia_vgpu_pfs entry: {reason}")]
    BadAddress { value: String, reason: String },
}

/// Split off a YAML comment: `#` at the start or after whitespace, outside quotes.
fn split_comment(s: &str) -> (&str, &str) {
    let b = s.as_bytes();
    let mut q: Option<u8> = None;
    for i in 0..b.len() {
        match (q, b[i]) {
            (None, b'"') | (None, b'\'') => q = Some(b[i]),
            (Some(c), x) if c == x => q = None,
            (None, b'#') if i == 0 || b[i - 1] == b' ' || b[i - 1] == b'\t' => {
                return (&s[..i], &s[i..]);
            }
            _ => {}
        }
    }
    (s, "")
}

fn unquote(s: &str) -> (&str, Option<char>) {
    let s = s.trim();
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return (&s[1..s.len() - 1], Some(q));
        }
    }
    (s, None)
}

/// Byte offset just after `nvidia_vgpu_pfs:` when the line is that top-level key.
fn key_line(body: &str) -> Option<usize> {
    // A quoted key is the same key: `"nvidia_vgpu_pfs":`, `'nvidia_vgpu_pfs':`.
    let rest = body
        .strip_prefix(KEY)
        .or_else(|| body.strip_prefix(&format!("\"{KEY}\"")))
        .or_else(|| body.strip_prefix(&format!("'{KEY}'")))?;
    let t = rest.trim_start_matches([' ', '\t']);
    let after = t.strip_prefix(':')?;
    if !(after.is_empty() || after.starts_with([' ', '\t'])) {
        return None;
    }
    Some(body.len() - after.len())
}

/// A block item line (`- 67:00.0`, `  - "67:00.0"  # gpu 0`): (indent, text after the dash).
fn item_line(body: &str) -> Option<(usize, &str)> {
    let t = body.trim_start_matches(' ');
    let indent = body.len() - t.len();
    let rest = t.strip_prefix('-')?;
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    Some((indent, rest))
}

fn is_blank_or_comment(body: &str) -> bool {
    let t = body.trim();
    t.is_empty() || t.starts_with('#')
}

#[derive(Debug)]
enum Form {
    /// Items on lines `first..=last` (may be empty: `last < first`).
    Block { first: usize, last: usize },
    /// One-line `[a, b]`; byte range of the brackets' content in the key line.
    Flow { open: usize, close: usize },
    /// A plain scalar value (not a list): replaced by a block.
    Scalar,
}

struct Found {
    key: usize,
    /// Offset of the value (after `:`) in the key line.
    value_at: usize,
    form: Form,
    items: Vec<(String, Option<char>)>,
}

fn find(content: &str) -> Result<Option<Found>, HostConfError> {
    let ls = lines(content);
    let keys: Vec<usize> = (0..ls.len())
        .filter(|&i| key_line(ls[i].0).is_some())
        .collect();
    let key = match keys.as_slice() {
        [] => return Ok(None),
        [k] => *k,
        [_, second, ..] => {
            return Err(HostConfError::Unsupported {
                line: second + 1,
                reason: format!("{KEY} appears more than once"),
            })
        }
    };
    let body = ls[key].0;
    let value_at = key_line(body).expect("key line");
    let (value, _) = split_comment(&body[value_at..]);
    let v = value.trim();
    if v.starts_with('[') {
        if !v.ends_with(']') {
            return Err(HostConfError::Unsupported {
                line: key + 1,
                reason: format!("the flow list of {KEY} spans several lines"),
            });
        }
        let open = value_at + value.find('[').expect("[") + 1;
        let close = value_at + value.rfind(']').expect("]");
        let items = body[open..close]
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                let (u, q) = unquote(s);
                (u.to_string(), q)
            })
            .collect();
        return Ok(Some(Found {
            key,
            value_at,
            form: Form::Flow { open, close },
            items,
        }));
    }
    if !(v.is_empty() || v == "~" || v == "null") {
        // `key: value` followed by `- item` lines is not YAML; refuse rather than guess.
        if let Some(i) = (key + 1..ls.len()).find(|&i| !is_blank_or_comment(ls[i].0)) {
            if item_line(ls[i].0).is_some() {
                return Err(HostConfError::Unsupported {
                    line: i + 1,
                    reason: format!("{KEY} has both a value and list entries"),
                });
            }
            // An indented line continues the value (a multi-line YAML scalar): replacing only
            // the key's line would leave the rest behind as a broken document.
            if ls[i].0.starts_with([' ', '\t']) {
                return Err(HostConfError::Unsupported {
                    line: i + 1,
                    reason: format!("the value of {KEY} continues on this line"),
                });
            }
        }
        let (u, q) = unquote(v);
        return Ok(Some(Found {
            key,
            value_at,
            form: Form::Scalar,
            items: vec![(u.to_string(), q)],
        }));
    }
    let mut items = Vec::new();
    let mut last = key;
    let mut i = key + 1;
    while i < ls.len() {
        let b = ls[i].0;
        if let Some((_, rest)) = item_line(b) {
            let (val, _) = split_comment(rest);
            let (u, q) = unquote(val);
            if u.starts_with('[') || u.starts_with('{') || u.ends_with(':') {
                return Err(HostConfError::Unsupported {
                    line: i + 1,
                    reason: format!("{KEY} entries must be plain addresses like 67:00.0"),
                });
            }
            items.push((u.to_string(), q));
            last = i;
        } else if !is_blank_or_comment(b) {
            // An indented line that is not an entry: a continued entry, or a value written on
            // the line after the key. Not the plain list CloudPods expects.
            if b.starts_with([' ', '\t']) {
                return Err(HostConfError::Unsupported {
                    line: i + 1,
                    reason: format!("{KEY} is not a plain list of addresses"),
                });
            }
            break;
        }
        i += 1;
    }
    Ok(Some(Found {
        key,
        value_at,
        form: Form::Block {
            first: key + 1,
            last,
        },
        items,
    }))
}

fn norm(s: &str) -> String {
    PciAddr::parse(s).map_or_else(|_| s.to_string(), |a| a.short())
}

/// The list as CloudPods would read it (entries normalized to `bb:dd.f` when they parse as
/// PCI addresses); `None` when the key is absent. An empty flow list or empty key is `Some([])`.
pub fn read_pfs(content: &str) -> Result<Option<Vec<String>>, HostConfError> {
    let content = content.strip_prefix(BOM).unwrap_or(content);
    check_shape(content)?;
    Ok(find(content)?.map(|f| f.items.iter().map(|(v, _)| norm(v)).collect()))
}

/// Validate and normalize entries: `bb:dd.f` or a full address in PCI domain 0.
pub fn normalize_pfs(pfs: &[&str]) -> Result<Vec<String>, HostConfError> {
    let mut out: Vec<String> = Vec::new();
    for p in pfs {
        let a = PciAddr::parse(p).map_err(|e| HostConfError::BadAddress {
            value: p.to_string(),
            reason: e.reason,
        })?;
        if a.domain != 0 {
            return Err(HostConfError::BadAddress {
                value: p.to_string(),
                reason: "CloudPods assumes PCI domain 0000".into(),
            });
        }
        if !out.contains(&a.short()) {
            out.push(a.short());
        }
    }
    Ok(out)
}

fn fmt_item(v: &str, q: Option<char>) -> String {
    match q {
        Some(q) => format!("{q}{v}{q}"),
        None => v.to_string(),
    }
}

/// Set `nvidia_vgpu_pfs` to exactly `pfs` (order of existing entries kept, new ones appended,
/// duplicates dropped). Unchanged content when the set is already equal.
pub fn set_pfs(content: &str, pfs: &[&str]) -> Result<String, HostConfError> {
    // A byte order mark stays where it is; the YAML after it is what is edited.
    if let Some(rest) = content.strip_prefix(BOM) {
        return set_pfs(rest, pfs).map(|out| format!("{BOM}{out}"));
    }
    let want = normalize_pfs(pfs)?;
    check_shape(content)?;
    let out = edit(content, &want)?;
    if out != content {
        // What the bytes mean, judged by a real YAML parser: exactly one key with the list,
        // every other key as it was.
        // A fault there is the edit's: name the key's line of the original file.
        yaml_check::check_edit(content, &out, &want, norm).map_err(|e| match e {
            HostConfError::Unsupported { reason, .. } => HostConfError::Unsupported {
                line: find(content).ok().flatten().map_or(1, |f| f.key + 1),
                reason,
            },
            other => other,
        })?;
    }
    Ok(out)
}

const BOM: &str = "\u{feff}";

/// Refuse, before any edit, what this line editor cannot keep: anything but one block
/// mapping (a flow mapping `{a: 1, ...}`, several documents, invalid YAML).
fn check_shape(content: &str) -> Result<(), HostConfError> {
    let first = lines(content)
        .iter()
        .position(|(b, _)| !is_blank_or_comment(b) && b.trim() != "---");
    if let Some(i) = first {
        if lines(content)[i].0.trim_start().starts_with('{') {
            return Err(HostConfError::Unsupported {
                line: i + 1,
                reason: "the file is one flow mapping ({ ... }); vgpuctl edits block mappings (key: value per line) only".into(),
            });
        }
    }
    yaml_check::check_original(content)
}

fn edit(content: &str, want: &[String]) -> Result<String, HostConfError> {
    let want = want.to_vec();
    let ls = lines(content);
    let eol = if content.contains("\r\n") {
        "\r\n"
    } else {
        "\n"
    };
    let Some(f) = find(content)? else {
        if want.is_empty() {
            return Ok(content.to_string());
        }
        let mut out = content.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push_str(eol);
        }
        out.push_str(&format!("{KEY}:{eol}"));
        for w in &want {
            out.push_str(&format!("- \"{w}\"{eol}"));
        }
        return Ok(out);
    };
    let have: Vec<String> = f.items.iter().map(|(v, _)| norm(v)).collect();
    let mut have_set = have.clone();
    have_set.sort();
    let dedup_len = {
        let mut d = have_set.clone();
        d.dedup();
        d.len()
    };
    let mut want_set = want.clone();
    want_set.sort();
    if dedup_len == have.len() && have_set == want_set && !matches!(f.form, Form::Scalar) {
        return Ok(content.to_string());
    }
    // Follow the existing entries' quoting; quote when there is nothing to follow.
    let quote = f.items.first().map_or(Some('"'), |(_, q)| *q);
    let key_body = ls[f.key].0;
    let (_, comment) = split_comment(&key_body[f.value_at..]);
    let comment_sfx = if comment.is_empty() {
        String::new()
    } else {
        format!(" {comment}")
    };
    let mut out = String::new();
    match f.form {
        Form::Flow { open, close } => {
            for (i, (b, e)) in ls.iter().enumerate() {
                if i == f.key {
                    let items: Vec<String> = want.iter().map(|w| fmt_item(w, quote)).collect();
                    out.push_str(&format!(
                        "{}{}{}{e}",
                        &b[..open],
                        items.join(", "),
                        &b[close..]
                    ));
                } else {
                    out.push_str(&format!("{b}{e}"));
                }
            }
        }
        Form::Scalar | Form::Block { .. } => {
            let (first, last) = match f.form {
                Form::Block { first, last } => (first, last),
                _ => (f.key + 1, f.key),
            };
            // Style of new items: copy the first existing item's indent and dash spacing.
            let prefix = (first..=last)
                .find_map(|i| {
                    let b = ls[i].0;
                    item_line(b).map(|(ind, rest)| {
                        let sp = rest.len() - rest.trim_start().len();
                        format!("{}-{}", " ".repeat(ind), " ".repeat(sp.max(1)))
                    })
                })
                .unwrap_or_else(|| "- ".to_string());
            let key_prefix = &key_body[..f.value_at];
            for (i, (b, e)) in ls.iter().enumerate() {
                if i == f.key {
                    let value_empty = split_comment(&b[f.value_at..]).0.trim().is_empty();
                    if want.is_empty() {
                        out.push_str(&format!("{key_prefix} []{comment_sfx}{e}"));
                    } else if value_empty {
                        out.push_str(&format!("{b}{e}"));
                    } else {
                        out.push_str(&format!("{key_prefix}{comment_sfx}{e}"));
                    }
                    if last < first {
                        let e = if e.is_empty() { eol } else { e };
                        if out.ends_with(|c| c != '\n') {
                            out.push_str(e);
                        }
                        for w in &want {
                            out.push_str(&format!("{prefix}{}{e}", fmt_item(w, quote)));
                        }
                    }
                    continue;
                }
                if i >= first && i <= last {
                    if let Some((_, rest)) = item_line(b) {
                        let (val, _) = split_comment(rest);
                        let n = norm(unquote(val).0);
                        let earlier_same = (first..i).any(|j| {
                            item_line(ls[j].0)
                                .is_some_and(|(_, r)| norm(unquote(split_comment(r).0).0) == n)
                        });
                        if want.contains(&n) && !earlier_same {
                            out.push_str(&format!("{b}{e}"));
                        }
                    } else {
                        out.push_str(&format!("{b}{e}"));
                    }
                    if i == last {
                        let e = if e.is_empty() { eol } else { e };
                        if !out.is_empty() && !out.ends_with('\n') {
                            out.push_str(e);
                        }
                        for w in want.iter().filter(|w| !have.contains(w)) {
                            out.push_str(&format!("{prefix}{}{e}", fmt_item(w, quote)));
                        }
                    }
                    continue;
                }
                out.push_str(&format!("{b}{e}"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host.conf as ocboot writes it on a CloudPods host, with the seed's list.
    fn sample() -> String {
        let mut s = String::from(
            "# host agent configuration\n\
             region: region0\n\
             address: 10.127.100.2\n\
             auth_uri: https://10.127.100.2:30357/v3\n\
             admin_user: regionadmin\n\
             admin_password: \"p@ss: # not a comment\"\n\
             admin_tenant_name: system\n\
             bridge_driver: openvswitch\n\
             networks:\n\
             - enp3s0/br0/10.127.100.2\n\
             local_image_path:\n\
             - /opt/cloud/workspace/disks\n\
             # 把所有的vgpu的PF全部写上\n\
             nvidia_vgpu_pfs:\n",
        );
        for a in [
            "67:00.0", "67:00.4", "67:00.5", "67:00.6", "67:00.7", "67:01.0", "67:01.1", "67:01.2",
            "67:01.3", "67:01.4", "67:01.5", "67:01.6", "67:01.7", "67:02.0", "67:02.1", "67:02.2",
            "67:02.3", "67:02.4", "67:02.5", "67:02.6", "67:02.7", "67:03.0", "67:03.1", "67:03.2",
            "67:03.3", "67:03.4", "67:03.5", "67:03.6", "67:03.7",
        ] {
            s.push_str(&format!("- {a}\n"));
        }
        s.push_str("# trailing comment about nvidia_vgpu_pfs\nhostname: control01\n");
        s
    }

    #[test]
    fn reads_the_seeds_list() {
        let pfs = read_pfs(&sample()).unwrap().unwrap();
        assert_eq!(pfs.len(), 29);
        assert_eq!(pfs[0], "67:00.0");
        assert_eq!(pfs[28], "67:03.7");
        assert_eq!(read_pfs("region: r\n").unwrap(), None);
    }

    #[test]
    fn setting_the_same_set_changes_nothing() {
        let s = sample();
        let pfs = read_pfs(&s).unwrap().unwrap();
        let mut refs: Vec<&str> = pfs.iter().map(String::as_str).collect();
        refs.reverse();
        assert_eq!(set_pfs(&s, &refs).unwrap(), s);
    }

    #[test]
    fn replaces_the_list_keeping_everything_else() {
        let s = sample();
        let out = set_pfs(&s, &["0000:e8:00.4", "e8:04.0"]).unwrap();
        assert_eq!(read_pfs(&out).unwrap().unwrap(), vec!["e8:00.4", "e8:04.0"]);
        let expect_tail = "nvidia_vgpu_pfs:\n- e8:00.4\n- e8:04.0\n# trailing comment about nvidia_vgpu_pfs\nhostname: control01\n";
        assert!(out.ends_with(expect_tail), "{out}");
        let head = &s[..s.find("nvidia_vgpu_pfs:\n").unwrap()];
        assert!(out.starts_with(head));
        assert_eq!(set_pfs(&out, &["e8:00.4", "e8:04.0"]).unwrap(), out);
    }

    #[test]
    fn keeps_existing_entries_and_their_comments_appends_new() {
        let s = "a: 1\nnvidia_vgpu_pfs:   # vGPU parents\n  - 67:00.4   # VM db01\n  # spare\n  - 67:00.5\nb: 2\n";
        let out = set_pfs(s, &["67:00.4", "68:00.4"]).unwrap();
        assert_eq!(
            out,
            "a: 1\nnvidia_vgpu_pfs:   # vGPU parents\n  - 67:00.4   # VM db01\n  # spare\n  - 68:00.4\nb: 2\n"
        );
    }

    #[test]
    fn flow_form_edited_in_place() {
        let s = "x: y\nnvidia_vgpu_pfs: [67:00.0, 68:00.0]  # pfs\nz: 1\n";
        assert_eq!(read_pfs(s).unwrap().unwrap(), vec!["67:00.0", "68:00.0"]);
        assert_eq!(
            set_pfs(s, &["e8:00.4"]).unwrap(),
            "x: y\nnvidia_vgpu_pfs: [e8:00.4]  # pfs\nz: 1\n"
        );
        let q = "nvidia_vgpu_pfs: [\"67:00.0\"]\n";
        assert_eq!(
            set_pfs(q, &["67:00.0", "67:00.4"]).unwrap(),
            "nvidia_vgpu_pfs: [\"67:00.0\", \"67:00.4\"]\n"
        );
        assert_eq!(set_pfs(q, &[]).unwrap(), "nvidia_vgpu_pfs: []\n");
        assert_eq!(read_pfs("nvidia_vgpu_pfs: []\n").unwrap(), Some(vec![]));
    }

    #[test]
    fn quoted_block_items_keep_their_quotes() {
        let s = "nvidia_vgpu_pfs:\n- '67:00.0'\n";
        assert_eq!(read_pfs(s).unwrap().unwrap(), vec!["67:00.0"]);
        assert_eq!(
            set_pfs(s, &["67:00.0", "67:00.4"]).unwrap(),
            "nvidia_vgpu_pfs:\n- '67:00.0'\n- '67:00.4'\n"
        );
    }

    #[test]
    fn adds_the_key_when_absent() {
        assert_eq!(
            set_pfs("region: r\n", &["e8:00.4"]).unwrap(),
            "region: r\nnvidia_vgpu_pfs:\n- \"e8:00.4\"\n"
        );
        assert_eq!(
            set_pfs("region: r", &["e8:00.4"]).unwrap(),
            "region: r\nnvidia_vgpu_pfs:\n- \"e8:00.4\"\n"
        );
        assert_eq!(
            set_pfs("", &["e8:00.4"]).unwrap(),
            "nvidia_vgpu_pfs:\n- \"e8:00.4\"\n"
        );
        assert_eq!(set_pfs("region: r\n", &[]).unwrap(), "region: r\n");
    }

    #[test]
    fn empty_key_and_empty_result() {
        assert_eq!(
            set_pfs("nvidia_vgpu_pfs:\nb: 1\n", &["67:00.4"]).unwrap(),
            "nvidia_vgpu_pfs:\n- \"67:00.4\"\nb: 1\n"
        );
        assert_eq!(
            set_pfs("nvidia_vgpu_pfs: ~\n", &["67:00.4"]).unwrap(),
            "nvidia_vgpu_pfs:\n- \"67:00.4\"\n"
        );
        assert_eq!(
            set_pfs("nvidia_vgpu_pfs:", &["67:00.4"]).unwrap(),
            "nvidia_vgpu_pfs:\n- \"67:00.4\"\n"
        );
        assert_eq!(
            set_pfs("nvidia_vgpu_pfs:\n- 67:00.4\nb: 1\n", &[]).unwrap(),
            "nvidia_vgpu_pfs: []\nb: 1\n"
        );
    }

    #[test]
    fn scalar_value_becomes_a_list() {
        assert_eq!(
            read_pfs("nvidia_vgpu_pfs: 67:00.4\n").unwrap().unwrap(),
            vec!["67:00.4"]
        );
        assert_eq!(
            set_pfs("nvidia_vgpu_pfs: 67:00.4\n", &["67:00.4"]).unwrap(),
            "nvidia_vgpu_pfs:\n- 67:00.4\n"
        );
    }

    #[test]
    fn crlf_and_no_trailing_newline() {
        let s = "a: 1\r\nnvidia_vgpu_pfs:\r\n- 67:00.0\r\nb: 2\r\n";
        assert_eq!(
            set_pfs(s, &["67:00.0", "67:00.4"]).unwrap(),
            "a: 1\r\nnvidia_vgpu_pfs:\r\n- 67:00.0\r\n- 67:00.4\r\nb: 2\r\n"
        );
        let s = "nvidia_vgpu_pfs:\n- 67:00.0";
        assert_eq!(
            set_pfs(s, &["67:00.0", "67:00.4"]).unwrap(),
            "nvidia_vgpu_pfs:\n- 67:00.0\n- 67:00.4\n"
        );
    }

    #[test]
    fn similar_keys_and_nested_keys_are_not_ours() {
        let s = "nvidia_vgpu_pfs_old:\n- 1:00.0\nx:\n  nvidia_vgpu_pfs:\n  - 2:00.0\n";
        assert_eq!(read_pfs(s).unwrap(), None);
        assert_eq!(
            set_pfs(s, &["67:00.0"]).unwrap(),
            format!("{s}nvidia_vgpu_pfs:\n- \"67:00.0\"\n")
        );
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(matches!(
            set_pfs("", &["../x"]),
            Err(HostConfError::BadAddress { .. })
        ));
        assert!(matches!(
            set_pfs("", &["0001:67:00.0"]),
            Err(HostConfError::BadAddress { .. })
        ));
        assert!(matches!(
            set_pfs("nvidia_vgpu_pfs: [67:00.0,\n 68:00.0]\n", &["67:00.0"]),
            Err(HostConfError::Unsupported { line: 1, .. })
        ));
        assert!(matches!(
            set_pfs("nvidia_vgpu_pfs: 67:00.4\n# c\n- 67:00.0\n", &["67:00.0"]),
            Err(HostConfError::Unsupported { line: 3, .. })
        ));
        assert!(matches!(
            set_pfs("nvidia_vgpu_pfs: []\nnvidia_vgpu_pfs: []\n", &["67:00.0"]),
            Err(HostConfError::Unsupported { line: 2, .. })
        ));
    }

    #[test]
    fn duplicates_collapse() {
        let s = "nvidia_vgpu_pfs:\n- 67:00.0\n- 0000:67:00.0\n";
        assert_eq!(
            set_pfs(s, &["67:00.0"]).unwrap(),
            "nvidia_vgpu_pfs:\n- 67:00.0\n"
        );
    }

    /// Found by the `hostconf` fuzz target: a scalar value continued on an indented line was
    /// replaced on the key's line only, leaving the continuation as an invalid document.
    #[test]
    fn multi_line_scalar_is_refused() {
        let s = "nvidia_vgpu_pfs: 67:00.0\n  68:00.0\nother: 1\n";
        assert!(matches!(
            set_pfs(s, &["67:00.0"]),
            Err(HostConfError::Unsupported { line: 2, .. })
        ));
        assert!(read_pfs(s).is_err());
        // A comment or a new key after the scalar is fine.
        let s = "nvidia_vgpu_pfs: 67:00.0\n# c\nother: 1\n";
        assert_eq!(
            set_pfs(s, &["67:00.0"]).unwrap(),
            "nvidia_vgpu_pfs:\n- 67:00.0\n# c\nother: 1\n"
        );
    }

    #[test]
    fn invariant_set_twice_is_set_once() {
        let bases = [
            sample(),
            String::new(),
            "nvidia_vgpu_pfs: [67:00.0]\n".into(),
            "nvidia_vgpu_pfs:\n  - \"67:00.0\" # x\n\n# c\nother: 1".into(),
        ];
        let lists: [&[&str]; 4] = [
            &[],
            &["67:00.0"],
            &["e8:00.4", "e8:04.0", "67:00.0"],
            &["e8:00.4"],
        ];
        for b in &bases {
            for l in lists {
                let once = set_pfs(b, l).unwrap();
                assert_eq!(set_pfs(&once, l).unwrap(), once, "{b:?} {l:?}");
                let mut got = read_pfs(&once).unwrap().unwrap_or_default();
                got.sort();
                let mut want = normalize_pfs(l).unwrap();
                want.sort();
                assert_eq!(got, want, "{b:?} {l:?}");
                // Lines that are not the key or its items are kept, in order.
                let others = |s: &str| -> Vec<String> {
                    s.lines()
                        .filter(|x| key_line(x).is_none() && item_line(x).is_none())
                        .map(String::from)
                        .collect()
                };
                let (ob, oo) = (others(b), others(&once));
                assert_eq!(ob, oo, "{b:?} {l:?}");
            }
        }
    }

    /// host.conf shapes seen on real hosts or easy to write by hand: each is either edited into
    /// YAML that a real parser reads as one key with the list and every other key unchanged,
    /// or refused with the line named.
    #[test]
    fn corpus_edits_are_valid_yaml_or_refused() {
        use yaml_rust2::{Yaml, YamlLoader};
        let want = ["e8:00.4", "e8:04.0"];
        let kept = [
            "region: r\nnvidia_vgpu_pfs:\n- 67:00.0\nb: 2\n",
            "region: r\nnvidia_vgpu_pfs: [67:00.0]\n",
            "region: r\nnvidia_vgpu_pfs:\n",
            "\"nvidia_vgpu_pfs\": [67:00.0]\nregion: r\n",
            "'nvidia_vgpu_pfs':\n- 67:00.0\nregion: r\n",
            "\u{feff}region: r\nnvidia_vgpu_pfs:\n- 67:00.0\n",
            "\u{feff}region: r\n",
            "region: r\r\nnvidia_vgpu_pfs:\r\n- 67:00.0\r\nb: 2\r\n",
            "# c\nregion: r # x\nnvidia_vgpu_pfs: # pfs\n  # spare\n  - 67:00.0 # gpu0\n",
            "---\nregion: r\nnvidia_vgpu_pfs: []\n",
            "base: &b {x: 1}\nother: *b\nnvidia_vgpu_pfs: [67:00.0]\n",
            // An alias as the value is replaced; the anchor's owner keeps its value.
            "pfs: &p [67:00.0]\nnvidia_vgpu_pfs: *p\n",
        ];
        for c in kept {
            let out = set_pfs(c, &want).unwrap_or_else(|e| panic!("{c:?}: {e}"));
            assert_eq!(out.starts_with(BOM), c.starts_with(BOM), "{c:?}");
            let docs = YamlLoader::load_from_str(out.trim_start_matches(BOM))
                .unwrap_or_else(|e| panic!("{c:?} -> {out:?}: {e}"));
            let before = YamlLoader::load_from_str(c.trim_start_matches(BOM)).unwrap();
            let (Yaml::Hash(a), Yaml::Hash(b)) = (&docs[0], &before[0]) else {
                panic!("{out:?}")
            };
            let key = Yaml::String(KEY.into());
            let list: Vec<&str> = a[&key]
                .as_vec()
                .unwrap()
                .iter()
                .map(|y| y.as_str().unwrap())
                .collect();
            assert_eq!(list, want, "{c:?} -> {out:?}");
            assert_eq!(
                a.len(),
                b.len() + usize::from(!b.contains_key(&key)),
                "{out:?}"
            );
            for (k, v) in b.iter().filter(|(k, _)| **k != key) {
                assert_eq!(a.get(k), Some(v), "{c:?} -> {out:?}");
            }
            assert_eq!(set_pfs(&out, &want).unwrap(), out, "{c:?}");
        }
        let refused = [
            ("{a: 1, nvidia_vgpu_pfs: [x]}\n", 1),
            ("# c\n{region: r}\n", 2),
            ("region: r\nregion: s\n", 2),
            ("a: 1\n---\nb: 2\n", 1),
            ("- 67:00.0\n", 1),
            ("nvidia_vgpu_pfs: &p [67:00.0]\nother: *p\n", 1),
            ("\"nvidia_vgpu_pfs\": []\nnvidia_vgpu_pfs: []\n", 2),
        ];
        for (c, line) in refused {
            match set_pfs(c, &want) {
                Err(HostConfError::Unsupported { line: l, .. }) => assert_eq!(l, line, "{c:?}"),
                other => panic!("{c:?}: {other:?}"),
            }
        }
    }
}
