//! Issue 16: the man pages and shell completions that `slotctl-gen-docs`
//! writes from the CLI's clap definitions, checked with the real tools:
//! every page renders with man-db's `man -l` and passes groff's warnings
//! (`groff -man -ww -z`); there is one page per subcommand clap knows (a
//! new subcommand without a page fails); each page names every long option
//! of its command; `slotctl.toml(5)` documents exactly the keys the config
//! parser accepts, table by table, and each number's range from
//! `config::bounds`; bash completes `slotctl ins<TAB>` to `install`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use slotctl::config::bounds::{BOUNDS, CHECK_TIMEOUT};
use slotctl::config::Config;
use slotctl_gen_docs::{generate, Generated};
use slotctl_tests::require_tool;

fn generated() -> (tempfile::TempDir, Generated) {
    let dir = tempfile::tempdir().unwrap();
    let done = generate(dir.path()).expect("generate the docs");
    (dir, done)
}

/// `slotctl`, `slotctl-install`, `slotctl-image-pack`, ... for every visible
/// command of the CLI's own clap tree, with its long options.
fn clap_pages() -> BTreeMap<String, Vec<String>> {
    fn walk(cmd: &clap::Command, name: String, out: &mut BTreeMap<String, Vec<String>>) {
        let longs = cmd
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect();
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, format!("{name}-{}", sub.get_name()), out);
        }
        out.insert(name, longs);
    }
    let mut out = BTreeMap::new();
    walk(&slotctl::cli::command(), "slotctl".into(), &mut out);
    out
}

fn section1_pages(man_dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(man_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|f| f.strip_suffix(".1").map(str::to_string))
        .collect()
}

#[test]
fn one_page_per_subcommand_clap_knows() {
    let (dir, done) = generated();
    let man_dir = dir.path().join("man");
    let want: BTreeSet<String> = clap_pages().into_keys().collect();
    // The tree really is nested: a page per level.
    for name in [
        "slotctl",
        "slotctl-install",
        "slotctl-image",
        "slotctl-image-pack",
    ] {
        assert!(want.contains(name), "clap has no command {name}: {want:?}");
    }
    assert_eq!(
        section1_pages(&man_dir),
        want,
        "section 1 pages vs clap's commands"
    );
    assert_eq!(done.man_pages.len(), want.len() + 2, "{:?}", done.man_pages);
    assert!(man_dir.join("slotctl.toml.5").is_file());
    let dbus = std::fs::read_to_string(man_dir.join("slotctl-dbus.8")).unwrap();
    assert!(dbus.contains(".TH slotctl-dbus 8"), "{dbus}");
    for opt in ["system", "address", "slotctl", "disk", "config", "booted"] {
        assert!(
            dbus.contains(&format!("\\-\\-{opt}")),
            "slotctl-dbus.8 does not name --{opt}"
        );
    }
}

#[test]
fn every_page_names_each_long_option_of_its_command() {
    let (dir, _) = generated();
    for (name, longs) in clap_pages() {
        let page = dir.path().join(format!("man/{name}.1"));
        let roff =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        for long in longs {
            let opt = format!("\\fB\\-\\-{}\\fR", long.replace('-', "\\-"));
            assert!(roff.contains(&opt), "{name}.1 does not name --{long}");
        }
    }
}

/// `man -l` renders the page (a pipe: no pager) with nothing on stderr, and
/// `groff -ww -z` (all warnings, no output) has nothing to say about it.
fn check_renders(page: &Path) -> Result<String, String> {
    let out = Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANWIDTH", "80")
        .env_remove("MAN_KEEP_FORMATTING")
        .output()
        .expect("spawn man");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() || !stderr.is_empty() {
        return Err(format!(
            "man -l {}: {}: {stderr}",
            page.display(),
            out.status
        ));
    }
    let lint = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(page)
        .output()
        .expect("spawn groff");
    let warnings = String::from_utf8_lossy(&lint.stderr).into_owned();
    if !lint.status.success() || !warnings.is_empty() {
        return Err(format!("groff -ww {}: {warnings}", page.display()));
    }
    Ok(plain(&String::from_utf8_lossy(&out.stdout)))
}

/// Rendered text without grotty's overstrikes (`X\bX` bold, `_\bX` underline).
fn plain(text: &str) -> String {
    let mut out: Vec<char> = Vec::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{8}' {
            out.pop();
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out.into_iter().collect()
}

#[test]
fn every_page_renders_with_man_and_passes_groff_warnings() {
    require_tool("man");
    require_tool("groff");
    let (dir, done) = generated();
    for page in &done.man_pages {
        let text = check_renders(page).unwrap_or_else(|e| panic!("{e}"));
        let file = page.file_name().unwrap().to_str().unwrap();
        let (stem, section) = file.rsplit_once('.').unwrap();
        let header = format!("{}({section})", stem.to_uppercase());
        let first = text.lines().next().unwrap_or("");
        assert!(
            first.to_uppercase().starts_with(&header),
            "{file}: header {first:?}, want {header}"
        );
        assert!(
            text.contains("NAME") && text.contains("SEE ALSO"),
            "{file}: {text}"
        );
        // The .TH line has its date (clap_mangen shifts fields without one).
        // (The workspace shares one version: this crate's is slotctl's.)
        let source = format!("slotctl {}", env!("CARGO_PKG_VERSION"));
        let footer = text.lines().last().unwrap();
        assert!(footer.contains(&source), "{file}: footer {footer:?}");
    }
    // The check itself catches a broken page.
    let bad = dir.path().join("bad.1");
    std::fs::write(
        &bad,
        ".TH BAD 1 2026-01-01 x y\n.SH NAME\n.XYZZY not a macro\n",
    )
    .unwrap();
    assert!(check_renders(&bad).is_err(), "an undefined macro passed");
}

/// The page's keys per table: `""` for the top level, `boot_check`,
/// `boot_check.checks`, ...; each key with its paragraph's text.
fn page_keys(roff: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut tables: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let (mut in_keys, mut table, mut key) = (false, String::new(), None::<String>);
    let mut lines = roff.lines();
    while let Some(line) = lines.next() {
        if let Some(h) = line.strip_prefix(".SH ") {
            in_keys = h == "KEYS";
            key = None;
        } else if !in_keys {
        } else if let Some(t) = line.strip_prefix(".SS ") {
            table = if t == "Top level" {
                String::new()
            } else {
                t.trim_matches(['[', ']']).into()
            };
            tables.entry(table.clone()).or_default();
            key = None;
        } else if line == ".TP" {
            let next = lines.next().unwrap_or("");
            let k = next.strip_prefix(".B ").expect(".TP followed by .B KEY");
            key = Some(k.to_string());
            tables
                .entry(table.clone())
                .or_default()
                .insert(k.into(), String::new());
        } else if let Some(k) = &key {
            let text = tables.get_mut(&table).unwrap().get_mut(k).unwrap();
            text.push_str(line);
            text.push('\n');
        }
    }
    tables
}

/// The keys the config parser accepts in `table`: its own error for an
/// unknown key lists them (`deny_unknown_fields`).
fn parser_keys(table: &str) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slotctl.toml");
    let header = match table {
        "" => String::new(),
        "boot_check.checks" => "[[boot_check.checks]]\n".into(),
        t => format!("[{t}]\n"),
    };
    std::fs::write(&path, format!("{header}zz_not_a_key = 1\n")).unwrap();
    let err = Config::from_file(&path)
        .expect_err("an unknown key")
        .to_string();
    // serde: "expected `a`", "expected `a` or `b`", "expected one of `a`, `b`, ...".
    let list = err
        .split_once("expected ")
        .unwrap_or_else(|| panic!("no key list in: {err}"))
        .1;
    let keys: BTreeSet<String> = list
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert!(!keys.is_empty(), "no key list in: {err}");
    keys
}

#[test]
fn config_page_documents_exactly_the_parsers_keys_and_ranges() {
    let (dir, _) = generated();
    let roff = std::fs::read_to_string(dir.path().join("man/slotctl.toml.5")).unwrap();
    let tables = page_keys(&roff);
    let names: Vec<&str> = tables.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "",
            "agent",
            "boot_check",
            "boot_check.checks",
            "ddi",
            "http",
            "tls"
        ]
    );
    for (table, keys) in &tables {
        // A sub-table documented as its own section is one of the keys too.
        let prefix = if table.is_empty() {
            String::new()
        } else {
            format!("{table}.")
        };
        let mut documented: BTreeSet<String> = keys.keys().cloned().collect();
        for t in tables
            .keys()
            .filter_map(|t| t.strip_prefix(prefix.as_str()))
        {
            if !t.is_empty() && !t.contains('.') && t != table {
                documented.insert(t.to_string());
            }
        }
        assert_eq!(documented, parser_keys(table), "keys of [{table}]");
    }
    let mut bounds: Vec<(&str, &str, u64, u64)> = BOUNDS
        .iter()
        .map(|b| match b.key.split_once('.') {
            Some((t, k)) => (t, k, b.min, b.max),
            None => ("", b.key, b.min, b.max),
        })
        .collect();
    bounds.push((
        "boot_check.checks",
        CHECK_TIMEOUT.key,
        CHECK_TIMEOUT.min,
        CHECK_TIMEOUT.max,
    ));
    for (table, key, min, max) in bounds {
        let text = &tables[table][key];
        let want = format!("Range: {min} to {max}.");
        assert!(
            text.contains(&want),
            "[{table}] {key}: no {want:?} in {text:?}"
        );
    }
}

/// Bash's completion of `words` with the cursor on the last word: the
/// generated script sourced, the completion function called as bash's
/// `complete -F` would, COMPREPLY read back.
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let cword = words.len() - 1;
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let line = words.join(" ");
    let prog = format!(
        "source '{}' || exit 9\n\
         COMP_WORDS=({}); COMP_CWORD={cword}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}\n\
         _slotctl slotctl '{}' '{}' || exit 8\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words[cword],
        words[cword - 1],
    );
    let out = Command::new("bash")
        .args(["--noprofile", "--norc", "-c", &prog])
        .output()
        .expect("spawn bash");
    assert!(
        out.status.success(),
        "bash: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_subcommands_and_options() {
    require_tool("bash");
    let (_dir, done) = generated();
    let names: Vec<PathBuf> = done
        .completions
        .iter()
        .map(|p| p.file_name().unwrap().into())
        .collect();
    assert_eq!(
        names,
        [
            PathBuf::from("slotctl.bash"),
            "_slotctl".into(),
            "slotctl.fish".into()
        ]
    );
    for script in &done.completions {
        let text = std::fs::read_to_string(script).unwrap();
        assert!(
            text.contains("install") && text.contains("mark-good"),
            "{}",
            script.display()
        );
    }
    let bash = &done.completions[0];
    assert_eq!(bash_complete(bash, &["slotctl", "ins"]), ["install"]);
    assert_eq!(bash_complete(bash, &["slotctl", "image", "p"]), ["pack"]);
    assert_eq!(
        bash_complete(bash, &["slotctl", "zzz-none"]),
        Vec::<String>::new()
    );
    let opts = bash_complete(bash, &["slotctl", "install", "--"]);
    assert!(opts.iter().any(|o| o == "--factory"), "{opts:?}");
}
