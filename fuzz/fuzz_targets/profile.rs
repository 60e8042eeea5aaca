//! `Profile::parse` (profile_load::check): never panics; every error names the file and has a
//! reason and a position inside the text; a valid profile survives a write/read round trip
//! (export and the active profile are written with the same serializer); the driver link's
//! query string (a credential) is never echoed in an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vgpuctl::profile::Profile;
use vgpuctl::profile_load;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let checked = profile_load::check(text, "fuzz.toml");
    let first = Profile::parse(text, "fuzz.toml");
    match &checked {
        Ok(p) => {
            assert_eq!(first.as_ref(), Ok(p));
            let out = toml::to_string_pretty(p).expect("a parsed profile serializes");
            let back = Profile::parse(&out, "roundtrip.toml")
                .unwrap_or_else(|e| panic!("written profile does not read back: {e}\n{out}"));
            assert_eq!(&back, p, "round trip changed the profile:\n{out}");
        }
        Err(errs) => {
            assert!(!errs.is_empty());
            assert_eq!(first.as_ref().err(), errs.first());
            let lines = text.split('\n').count();
            for e in errs {
                assert!(!e.reason.trim().is_empty(), "{e:?}");
                assert!(e.line <= lines, "{e:?} beyond {lines} lines");
                assert!(e.to_string().starts_with("fuzz.toml"), "{e}");
            }
        }
    }
    // A secret query must not leak into messages (when it is only in the url).
    if let Ok(t) = text.parse::<toml::Table>() {
        let url = t
            .get("driver")
            .and_then(|d| d.get("url"))
            .and_then(|u| u.as_str());
        if let Some((_, q)) = url.and_then(|u| u.split_once('?')) {
            if q.len() >= 8 && text.matches(q).count() == 1 {
                if let Err(errs) = &checked {
                    for e in errs {
                        assert!(!e.to_string().contains(q), "query echoed: {e}");
                    }
                }
            }
        }
    }
});
