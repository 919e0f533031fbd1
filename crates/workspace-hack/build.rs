// Cargo only counts a package's build-dependencies when it has a build
// script; this empty one lets the workspace-hack unify their features too.
fn main() {}
