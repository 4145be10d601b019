//! `deploy/kubernetes/` cannot drift from `cvm-attest serve`: its configuration parses as serve's (every key
//! it sets exists), the files it names are the ones the pod's Secrets provide, the container runs `serve
//! --config` on the mounted file, and the Deployment, probes, Service and PodDisruptionBudget fit together.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use cvm_attest::server::Config;
use cvm_attest::server::config::BackendKind;
use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

fn manifests() -> Vec<(PathBuf, Yaml)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in YamlLoader::load_from_str(&text).unwrap() {
            out.push((path.clone(), doc));
        }
    }
    out
}

fn find<'a>(docs: &'a [(PathBuf, Yaml)], kind: &str) -> &'a Yaml {
    let found: Vec<_> = docs
        .iter()
        .filter(|(_, d)| d["kind"].as_str() == Some(kind))
        .collect();
    assert_eq!(found.len(), 1, "one {kind}");
    &found[0].1
}

fn s(y: &Yaml) -> &str {
    y.as_str().unwrap_or_else(|| panic!("not a string: {y:?}"))
}

fn list(y: &Yaml) -> &[Yaml] {
    y.as_vec().unwrap_or_else(|| panic!("not a list: {y:?}"))
}

/// The volume of the pod named `name`.
fn volume<'a>(pod: &'a Yaml, name: &str) -> &'a Yaml {
    list(&pod["volumes"])
        .iter()
        .find(|v| s(&v["name"]) == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

/// Where `container` mounts volume `name`.
fn mount<'a>(container: &'a Yaml, name: &str) -> &'a str {
    list(&container["volumeMounts"])
        .iter()
        .find(|m| s(&m["name"]) == name)
        .map(|m| s(&m["mountPath"]))
        .unwrap_or_else(|| panic!("{} does not mount {name}", s(&container["name"])))
}

#[test]
fn the_kubernetes_manifests_set_only_keys_serve_knows_and_fit_together() {
    let docs = manifests();
    for (path, d) in &docs {
        assert!(d["apiVersion"].as_str().is_some(), "{}", path.display());
        assert_eq!(
            s(&d["metadata"]["labels"]["app.kubernetes.io/name"]),
            "cvm-attest"
        );
    }
    let deployment = find(&docs, "Deployment");
    let labels = &deployment["spec"]["selector"]["matchLabels"];
    assert_eq!(
        &deployment["spec"]["template"]["metadata"]["labels"],
        labels
    );
    assert!(deployment["spec"]["replicas"].as_i64().unwrap() >= 2);
    let pod = &deployment["spec"]["template"]["spec"];
    let containers = list(&pod["containers"]);
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // The configuration: serve's own parser (unknown keys refused) accepts it.
    let args: Vec<&str> = list(&c["args"]).iter().map(s).collect();
    assert_eq!(args[..2], ["serve", "--config"]);
    let config_path = Path::new(args[2]);
    let config_volume = volume(pod, "config");
    assert_eq!(Path::new(mount(c, "config")), config_path.parent().unwrap());
    let cm_name = s(&config_volume["configMap"]["name"]);
    let item = &list(&config_volume["configMap"]["items"])[0];
    assert_eq!(
        s(&item["path"]),
        config_path.file_name().unwrap().to_str().unwrap()
    );
    let configmap = find(&docs, "ConfigMap");
    assert_eq!(s(&configmap["metadata"]["name"]), cm_name);
    let toml = s(&configmap["data"][s(&item["key"])]);
    let config = Config::from_toml(toml, Path::new("/")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.store.backend, BackendKind::Postgres);
    let pg = config.store.postgres.as_ref().unwrap();
    assert!(pg.ca.is_some(), "TLS to the database");

    // Every file the configuration names comes from a Secret, through the init container's copy.
    let keys_dir = Path::new(mount(c, "keys"));
    let init = &list(&pod["initContainers"])[0];
    let secrets_dir = mount(init, "secrets");
    assert_eq!(Path::new(mount(init, "keys")), keys_dir);
    let copy = list(&init["command"])
        .iter()
        .map(s)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        copy.contains(secrets_dir) && copy.contains("chmod 0600"),
        "{copy}"
    );
    let mut from_secrets = std::collections::HashMap::new();
    for source in list(&volume(pod, "secrets")["projected"]["sources"]) {
        let secret = &source["secret"];
        assert!(!secret.is_badvalue(), "only Secrets feed the key files");
        for item in list(&secret["items"]) {
            from_secrets.insert(s(&item["path"]).to_owned(), s(&secret["name"]).to_owned());
        }
    }
    let files = [
        ("tls.cert", &config.tls.cert),
        ("tls.key", &config.tls.key),
        ("tls.admin_client_ca", &config.tls.admin_client_ca),
        ("store.kek_file", &config.store.kek_file),
        (
            "store.postgres.password_file",
            pg.password_file.as_ref().unwrap(),
        ),
        ("store.postgres.ca", pg.ca.as_ref().unwrap()),
    ];
    for (key, path) in files {
        assert_eq!(path.parent().unwrap(), keys_dir, "{key}");
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(
            from_secrets.contains_key(name),
            "{key}: {name} is not from a Secret"
        );
    }

    // Probes on /healthz over the named port, resource requests.
    let port = s(&list(&c["ports"])[0]["name"]);
    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!(
            (s(&get["path"]), s(&get["port"]), s(&get["scheme"])),
            (cvm_attest::protocol::PATH_HEALTHZ, port, "HTTPS"),
            "{probe}"
        );
    }
    let port_number = list(&c["ports"])[0]["containerPort"].as_i64().unwrap();
    assert_eq!(config.listen.port() as i64, port_number);
    for r in ["cpu", "memory"] {
        assert!(c["resources"]["requests"][r].as_str().is_some(), "{r}");
    }
    // The grace period outlasts the service's own.
    assert!(
        pod["terminationGracePeriodSeconds"].as_i64().unwrap()
            > i64::try_from(config.limits.shutdown_grace_secs).unwrap()
    );

    // The Service and the PodDisruptionBudget select these pods.
    let service = find(&docs, "Service");
    assert_eq!(&service["spec"]["selector"], labels);
    assert_eq!(s(&list(&service["spec"]["ports"])[0]["targetPort"]), port);
    let pdb = find(&docs, "PodDisruptionBudget");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    assert!(pdb["spec"]["maxUnavailable"].as_i64().unwrap() >= 1);

    // `serve --config` is what the binary takes.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_cvm-attest"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--config"));
}
