//! Placeholder until the catalog lands from the `sim` branch.
pub struct Known {
    pub name: String,
    pub framebuffer_mib: u64,
    pub max_instances: u32,
}
pub fn name_for_id(_id: &str) -> Option<String> {
    None
}
pub fn lookup(_prefix: &str, _wanted: &str) -> Option<Known> {
    None
}
pub fn names(_prefix: &str) -> Vec<String> {
    Vec::new()
}
