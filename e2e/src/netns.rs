//! Commands inside the tests' own network namespaces (as root), and their
//! iptables rules in a form that compares across runs.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `program` in network namespace `ns`.
pub fn in_ns(ns: &str, program: &str, args: &[&str]) -> Output {
    in_ns_with_input(ns, program, args, None)
}

/// [`in_ns`] with `stdin` written to the program's standard input.
pub fn in_ns_with_input(ns: &str, program: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, program])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("ip netns exec {ns} {program}: {e}"));
    if let (Some(mut input), Some(text)) = (child.stdin.take(), stdin) {
        input
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("{program}: {e}"));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("ip netns exec {ns} {program}: {e}"))
}

/// [`in_ns`], which must succeed; its standard output.
pub fn ok(ns: &str, program: &str, args: &[&str]) -> String {
    ok_with_input(ns, program, args, None)
}

/// [`in_ns_with_input`], which must succeed; its standard output.
pub fn ok_with_input(ns: &str, program: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = in_ns_with_input(ns, program, args, stdin);
    assert!(
        out.status.success(),
        "{ns}: {program} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// What `save` (`iptables-save` or `ip6tables-save`) shows in `ns`,
/// without what changes by itself (comment lines, counters) and without
/// tables that hold no rule; each table prefixed with `save`.
pub fn saved_rules(ns: &str, save: &str) -> String {
    let text = ok(ns, save, &[]);
    let mut out = String::new();
    for table in text.split("\n*").map(|t| t.trim_start_matches('*')) {
        let lines: Vec<String> = table
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| match l.find(" [") {
                Some(i) if l.starts_with(':') => format!("{} [0:0]", &l[..i]),
                _ => l.to_string(),
            })
            .collect();
        if lines.iter().any(|l| l.starts_with("-A ")) {
            out.push_str(&format!("{save} *{}\n", lines.join("\n")));
        }
    }
    out
}
