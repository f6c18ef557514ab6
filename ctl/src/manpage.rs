//! hutchctl(8) documents every subcommand: a test walks the clap definition
//! and looks for each command (and each `template` command) at the head of
//! an entry of the man page's COMMANDS section.

use clap::CommandFactory;

use crate::Cli;

/// The man page, as packaged.
const PAGE: &str = include_str!("../../packaging/man/hutchctl.8");

/// The words at the head of every `.TP` entry: the line after `.TP`, its
/// macro, quotes and escapes removed (`.BI "template build " NAME` →
/// `template build NAME`).
fn entry_heads(page: &str) -> Vec<String> {
    let lines: Vec<&str> = page.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0].trim() == ".TP")
        .map(|w| {
            let l = w[1];
            let l = l.split_once(' ').map_or("", |(_, rest)| rest);
            l.replace(['"'], "")
                .replace("\\-", "-")
                .replace("\\fR", "")
                .replace("\\fI", "")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Every subcommand path: `list`, `template build`, ...
fn commands() -> Vec<String> {
    let mut out = Vec::new();
    for c in Cli::command().get_subcommands() {
        let name = c.get_name().to_string();
        let subs: Vec<String> = c
            .get_subcommands()
            .map(|s| format!("{name} {}", s.get_name()))
            .filter(|s| !s.ends_with(" help"))
            .collect();
        if subs.is_empty() {
            out.push(name);
        } else {
            out.extend(subs);
        }
    }
    out.retain(|c| c != "help");
    out
}

/// Each subcommand heads an entry of hutchctl(8).
#[test]
fn every_subcommand_is_in_the_man_page() {
    let heads = entry_heads(PAGE);
    let missing: Vec<String> = commands()
        .into_iter()
        .filter(|c| {
            !heads
                .iter()
                .any(|h| h == c || h.starts_with(&format!("{c} ")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "hutchctl(8) has no entry for: {missing:?}"
    );
}

/// The walk finds nested commands and the page's heads parse.
#[test]
fn the_walk_sees_nested_commands() {
    let c = commands();
    assert!(c.contains(&"template build".to_string()), "{c:?}");
    assert!(c.contains(&"stop".to_string()), "{c:?}");
    assert!(entry_heads(PAGE)
        .iter()
        .any(|h| h.starts_with("template list")));
}
