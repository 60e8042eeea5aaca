//! Placeholder until the catalog lands from the `sim` branch.
pub fn name_for_id(_id: &str) -> Option<String> {
    None
}
