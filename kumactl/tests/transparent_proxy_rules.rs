//! `kumactl install transparent-proxy` rules for each flag combination,
//! compared with golden files in Kuma's layout (`testdata/transparent-proxy/
//! <case>.args` → `<case>.golden`, the `--dry-run` output for both
//! families on a host with resolvers 10.96.0.10 and fd00::10).
//! `UPDATE_GOLDEN=1` rewrites them; refused configurations are goldens too.

use std::path::{Path, PathBuf};

use clap::Parser;
use kumactl::transparent_proxy::apply::dry_run;
use kumactl::transparent_proxy::cli::TransparentProxyArgs;
use kumactl::transparent_proxy::rules::Host;

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/transparent-proxy");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("testdata")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "args"))
        .collect();
    out.sort();
    out
}

fn render(args_file: &Path) -> String {
    let line = std::fs::read_to_string(args_file).expect("args");
    let mut argv = vec!["install-transparent-proxy".to_string()];
    argv.extend(line.split_whitespace().map(String::from));
    let args = match TransparentProxyArgs::try_parse_from(&argv) {
        Ok(a) => a,
        Err(e) => return format!("error: {e}"),
    };
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => return format!("error: {e}\n"),
    };
    let host = Host {
        loopback: "lo".into(),
        nameservers: vec!["10.96.0.10".parse().unwrap(), "fd00::10".parse().unwrap()],
        conntrack: true,
    };
    let ipv6 = config.ip_family_mode == kumactl::transparent_proxy::config::IpFamilyMode::DualStack;
    dry_run(&config, &host, ipv6)
}

#[test]
fn rules_are_kumas_for_every_flag_combination() {
    // Relative config paths in the cases are relative to the crate.
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).expect("cd");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for case in cases() {
        let actual = render(&case);
        let golden = case.with_extension("golden");
        if update {
            std::fs::write(&golden, &actual).expect("write");
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{}:\n--- expected\n{expected}--- actual\n{actual}",
                golden.display()
            )),
            Err(_) => failures.push(format!("{}: missing (UPDATE_GOLDEN=1)", golden.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bad_flags_are_refused_before_anything_changes() {
    let parse = |args: &[&str]| {
        let mut argv = vec!["x"];
        argv.extend_from_slice(args);
        TransparentProxyArgs::try_parse_from(argv)
            .map_err(|e| e.to_string())
            .and_then(|a| a.config())
    };
    let err = parse(&["--redirect-dns", "--redirect-all-dns-traffic"]).unwrap_err();
    assert!(err.contains("only one of"), "{err}");
    let err = parse(&["--redirect-inbound-port", "15001"]).unwrap_err();
    assert!(err.contains("each needs a port of its own"), "{err}");
    let err = parse(&["--exclude-inbound-ports", "15006"]).unwrap_err();
    assert!(err.contains("must not be excluded"), "{err}");
    let err = parse(&["--exclude-outbound-ports-for-uids", "http:80:5"]).unwrap_err();
    assert!(err.contains("invalid or unsupported protocol: 'http'"), "{err}");
    let err = parse(&["--exclude-outbound-ips", "10.0.0.300"]).unwrap_err();
    assert!(err.contains("--exclude-outbound-ips"), "{err}");
    let err = parse(&["--no-such-flag"]).unwrap_err();
    assert!(err.contains("--no-such-flag"), "{err}");
}
