//! Read-only commands: status, types.
use crate::exit::{Exit, Failure};
use crate::host::Host;

pub fn status(host: &Host, json: bool, libvirt_xml: Option<&str>) -> Result<Exit, Failure> {
    let facts = crate::facts::observe(host);
    let profile = crate::pins::load(host)?;
    let mut s = crate::status::status(&facts, profile.as_ref());
    {
        use crate::edit::registry_dwords as rd;
        s.scheduler = host
            .read(rd::PROC_PARAMS)
            .ok()
            .as_deref()
            .and_then(rd::loaded)
            .map(|v| rd::describe(v.unwrap_or(0)));
    }
    if let Some(only) = libvirt_xml {
        // The kernel names mdev devices in lowercase; a UUID copied in capitals is the same one.
        let only = only.to_ascii_lowercase();
        let only = (!only.is_empty()).then_some(only.as_str());
        crate::out!(
            "{}",
            crate::integrations::libvirt_xml(&s, only).map_err(Failure::failed)?
        );
        return Ok(Exit::Ok);
    }
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        crate::out!("{}", crate::status::render_status(&s));
    }
    Ok(Exit::Ok)
}

pub fn types(host: &Host, json: bool) -> Result<Exit, Failure> {
    let facts = crate::facts::observe(host);
    let t = crate::status::types(&facts);
    if json {
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "gpus": t }))?
        );
    } else {
        crate::out!("{}", crate::status::render_types(&t));
    }
    Ok(Exit::Ok)
}
