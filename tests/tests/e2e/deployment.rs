//! Deployment, as far as it can be checked without a Docker engine (none runs on these
//! machines): several processes starting at once apply each migration once;
//! `compose.yaml` names only services, files, binaries and settings that exist, with the
//! settings' own defaults; the Dockerfile builds every binary compose runs.

use std::{collections::BTreeSet, path::Path};

use yaml_rust2::{Yaml, YamlLoader};

use commcenter_shared::{
    platform::db,
    platform::settings::{DatabaseSettings, Secret},
};

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A database of its own, dropped at the end even when the test fails.
struct Scratch {
    name: String,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let admin = commcenter_tests::admin_database_url();
        commcenter_tests::remove_database_and_topology(&admin, &self.name, None);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_starting_at_once_create_the_database_and_apply_each_migration_once() {
    let scratch = Scratch {
        name: format!("cc_test_{}", commcenter_tests::unique_id()),
    };
    let admin = commcenter_tests::admin_database_url();
    let url = format!("{}/{}", admin.rsplit_once('/').unwrap().0, scratch.name);
    let settings = DatabaseSettings {
        url: Secret::new(url),
        max_connections: 2,
        acquire_timeout: std::time::Duration::from_secs(30),
    };
    // Four processes' start-up (as the api and the workers do it), at the same moment:
    // four connections racing on the server (run as one task: the migrator's future is
    // not Send).
    let starts = (0..4).map(|_| async {
        db::ensure_database(&settings).await?;
        let pool = db::connect(&settings).await?;
        db::migrate(&pool).await?;
        pool.close().await;
        anyhow::Ok(())
    });
    for started in futures_util::future::join_all(starts).await {
        started.expect("every start succeeds");
    }
    let pool = db::connect(&settings).await.unwrap();
    let applied: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected: Vec<(i64, bool)> = db::MIGRATOR.iter().map(|m| (m.version, true)).collect();
    assert_eq!(applied, expected, "each migration once, each a success");
    pool.close().await;
}

fn compose() -> Yaml {
    YamlLoader::load_from_str(&read("compose.yaml"))
        .expect("compose.yaml is YAML")
        .remove(0)
}

fn keys(yaml: &Yaml) -> Vec<String> {
    yaml.as_hash()
        .map(|h| {
            h.keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A mapping's entries, with those a merge key (`<<: *anchor`) brings in.
fn merged(mapping: &Yaml) -> Vec<(String, Yaml)> {
    let mut entries = Vec::new();
    for (key, value) in mapping.as_hash().into_iter().flatten() {
        match key.as_str() {
            Some("<<") => entries.extend(merged(value)),
            Some(key) => entries.push((key.to_owned(), value.clone())),
            None => {}
        }
    }
    entries
}

/// Every variable the binaries read, with its default where the source gives one:
/// `var("NAME", "default")`, `parse("NAME", "default")`, `base_url(...)` and the like in
/// `shared/src/platform/settings.rs`, or any other quoted upper-case name there.
fn settings_source() -> String {
    read("shared/src/platform/settings.rs") + &read("fakes/src/main.rs")
}

#[test]
fn compose_names_only_settings_the_binaries_read_with_their_defaults() {
    let compose = compose();
    let source = settings_source();
    let example = read(".env.example");
    let mut checked = 0;
    for service in keys(&compose["services"]) {
        let environment = &compose["services"][service.as_str()]["environment"];
        for (name, value) in merged(environment) {
            let name = name.as_str();
            if ["POSTGRES_", "RABBITMQ_", "MINIO_"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                continue; // the servers' own images read these
            }
            if name == "RUST_LOG" {
                continue; // read by tracing's filter, not by our settings
            }
            assert!(
                source.contains(&format!("\"{name}\"")),
                "{service} sets {name}, which no binary reads"
            );
            if !name.starts_with("FAKE_") {
                assert!(
                    example.contains(&format!("{name}=")) || example.contains(&format!("# {name}")),
                    "{name} is not in .env.example"
                );
            }
            // `${NAME:-default}`: the default is the binaries' own.
            let value = match value {
                Yaml::String(s) => s.clone(),
                other => format!("{other:?}"),
            };
            if let Some(default) = value
                .strip_prefix(&format!("${{{name}:-"))
                .and_then(|rest| rest.strip_suffix('}'))
                && !default.is_empty()
            {
                assert!(
                    source.contains(&format!("\"{name}\", \"{default}\"")),
                    "{service}: {name} defaults to {default:?}, not what the binaries default to"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} settings checked");
}

#[test]
fn compose_services_depend_on_services_and_volumes_that_exist() {
    let compose = compose();
    let services: BTreeSet<String> = keys(&compose["services"]).into_iter().collect();
    let volumes: BTreeSet<String> = keys(&compose["volumes"]).into_iter().collect();
    for expected in [
        "api", "workers", "proxy", "postgres", "rabbitmq", "s3", "s3-init", "fakes",
    ] {
        assert!(services.contains(expected), "no {expected} service");
    }
    for service in &services {
        let spec = &compose["services"][service.as_str()];
        for dependency in keys(&spec["depends_on"]) {
            assert!(
                services.contains(&dependency),
                "{service} depends on {dependency}"
            );
        }
        for volume in spec["volumes"].as_vec().into_iter().flatten() {
            let name = volume.as_str().unwrap().split(':').next().unwrap();
            assert!(
                volumes.contains(name),
                "{service} mounts {name}, which is not declared"
            );
        }
        if let Some(build) = spec["build"].as_str() {
            assert!(
                workspace().join(build).join("Dockerfile").exists(),
                "{service}"
            );
        }
    }
    // Scalable: the api and the workers publish no host port (the proxy does).
    for scaled in ["api", "workers"] {
        assert!(
            compose["services"][scaled]["ports"].is_badvalue(),
            "{scaled} publishes a host port: --scale {scaled}=2 would clash"
        );
    }
    assert_eq!(
        compose["services"]["fakes"]["profiles"][0].as_str(),
        Some("fakes"),
        "the fakes are opt-in"
    );
    // The fakes' env file points the providers at the fakes service, with names the
    // binaries read.
    let source = settings_source();
    for line in read("compose.fakes.env").lines() {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        if name.starts_with('#') {
            continue;
        }
        assert!(
            source.contains(&format!("\"{name}\"")),
            "compose.fakes.env: {name}"
        );
        if value.starts_with("http") {
            assert!(value.starts_with("http://fakes:"), "{name}={value}");
        }
    }
}

/// The binaries a package builds: its `[[bin]]` names.
fn binaries_of(package_dir: &str) -> Vec<String> {
    let manifest = read(&format!("{package_dir}/Cargo.toml"));
    manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|section| {
            section.lines().find_map(|line| {
                line.trim()
                    .strip_prefix("name = ")
                    .map(|n| n.trim_matches('"').to_owned())
            })
        })
        .collect()
}

#[test]
fn the_dockerfile_builds_every_binary_compose_runs() {
    let dockerfile = read("Dockerfile");
    let build = dockerfile
        .lines()
        .find(|l| l.contains("cargo build --release"))
        .expect("the Dockerfile runs cargo build --release");
    let packages: Vec<&str> = build
        .split_whitespace()
        .skip_while(|w| *w != "-p")
        .filter(|w| w.starts_with("commcenter-"))
        .collect();
    let package_dirs = [
        ("commcenter-api", "api"),
        ("commcenter-workers", "workers"),
        ("commcenter-ctl", "ctl"),
        ("commcenter-fakes", "fakes"),
    ];
    let mut built = BTreeSet::new();
    for package in &packages {
        let dir = package_dirs
            .iter()
            .find(|(name, _)| name == package)
            .unwrap_or_else(|| panic!("the Dockerfile builds an unknown package {package}"))
            .1;
        built.extend(binaries_of(dir));
    }
    let copied: BTreeSet<String> = dockerfile
        .lines()
        .find(|l| l.contains("cp target/release/"))
        .expect("the binaries are copied out")
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("target/release/").map(str::to_owned))
        .collect();
    assert_eq!(copied, built, "the image holds exactly what cargo built");
    let compose = compose();
    for service in keys(&compose["services"]) {
        let spec = &compose["services"][service.as_str()];
        if spec["image"].as_str() != Some("commcenter:dev") {
            continue;
        }
        let binary = spec["command"][0].as_str().unwrap();
        assert!(
            copied.contains(binary),
            "{service} runs {binary}, not in the image"
        );
    }
    // What the image copies is what `cargo build --release` makes of those packages.
    assert!(built.contains("commcenterctl") && built.contains("commcenter-api"));
}
