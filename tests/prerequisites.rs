//! The README's prerequisites are true (issue 16 item 16): Cargo.toml's `rust-version` is at
//! least what every locked crate asks, and the README names it and the C compiler `ring` needs.

mod common;

/// (major, minor) of a `rust-version` string ("1.89" or "1.89.0").
fn version(v: &str) -> (u32, u32) {
    let mut it = v.split('.').map(|n| n.parse::<u32>().unwrap());
    (it.next().unwrap(), it.next().unwrap_or(0))
}

#[test]
fn rust_version_covers_every_locked_crate_and_the_readme_says_it() {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(common::repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = j["packages"].as_array().unwrap();
    let ours = packages
        .iter()
        .find(|p| p["name"] == "vgpuctl")
        .and_then(|p| p["rust_version"].as_str())
        .expect("Cargo.toml sets rust-version");
    let (need, who) = packages
        .iter()
        .filter(|p| p["source"].is_string())
        .filter_map(|p| {
            let v = p["rust_version"].as_str()?;
            Some((version(v), format!("{} {}", p["name"], p["version"])))
        })
        .max()
        .unwrap();
    assert!(
        version(ours) >= need,
        "rust-version {ours} is older than {who} asks ({need:?})"
    );
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let (major, minor) = version(ours);
    assert!(
        readme.contains(&format!("Rust {major}.{minor} or later")),
        "the README names rust-version {ours}"
    );
    assert!(
        readme.contains("C compiler"),
        "the README names the C compiler"
    );
    assert!(!readme.contains("is the only prerequisite"));
}
