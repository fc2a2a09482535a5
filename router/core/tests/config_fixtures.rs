//! Config fixtures: every `tests/fixtures/config/*.yaml` is loaded, and the result is checked
//! against the comment lines at the top of the file, so a new case needs no code:
//!
//! - `# expect: ok` — the file loads;
//! - `# expect-error: LINE:COLUMN: MESSAGE` — one line per expected error, in file order,
//!   written as `Config::load` prints them, without the leading file name.

use std::fs;
use std::path::Path;

use triggerfish_core::config::Config;

#[derive(Debug, PartialEq)]
enum Expected {
    Ok,
    Errors(Vec<String>),
}

fn expectation(name: &str, source: &str) -> Expected {
    let mut ok = false;
    let mut errors = Vec::new();
    for line in source.lines().take_while(|line| line.starts_with('#')) {
        if line.trim() == "# expect: ok" {
            ok = true;
        } else if let Some(error) = line.strip_prefix("# expect-error: ") {
            errors.push(format!("{name}:{error}"));
        }
    }
    match (ok, errors.is_empty()) {
        (true, true) => Expected::Ok,
        (false, false) => Expected::Errors(errors),
        _ => panic!("{name}: start with `# expect: ok` or `# expect-error:` lines, not both"),
    }
}

#[test]
fn config_fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config");
    let mut paths: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 10, "fixtures missing from {}", dir.display());

    let mut failures = Vec::new();
    for path in &paths {
        let name = path.file_name().unwrap().to_str().unwrap();
        let source = fs::read_to_string(path).unwrap();
        let expected = expectation(name, &source);
        let actual = match Config::load(&source, name) {
            Ok(_) => Expected::Ok,
            Err(errors) => Expected::Errors(errors.iter().map(ToString::to_string).collect()),
        };
        if actual != expected {
            failures.push(format!(
                "{name}:\n  expected {expected:#?}\n  actual   {actual:#?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!("{} config fixtures", paths.len());
}
