use crate::exit::{Exit, Failure};
use crate::host::Host;

pub fn run(host: &Host, json: bool) -> Result<Exit, Failure> {
    let facts = crate::facts::observe(host);
    let report = crate::check::check(&facts);
    if json {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        crate::out!("{}", crate::check::render(&report, &facts));
    }
    Ok(if report.ready { Exit::Ok } else { Exit::Failed })
}
