//! The Kubernetes manifests: valid against the Kubernetes OpenAPI schemas
//! (PyPI `kubernetes-validate`, strict), and consistent with the server's drain.

use std::path::PathBuf;
use std::process::Command;

use echo_tests::process::{COMMAND_TIMEOUT, output_within, python, workspace_root};

fn manifests() -> Vec<PathBuf> {
    let dir = workspace_root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    files
}

fn validate(files: &[PathBuf]) -> std::process::Output {
    let validator = python().with_file_name("kubernetes-validate");
    assert!(
        validator.is_file(),
        "{} is missing: run scripts/test.sh",
        validator.display()
    );
    let mut command = Command::new(validator);
    command.arg("--strict").args(files);
    output_within(command, b"", COMMAND_TIMEOUT)
}

#[test]
fn manifests_pass_strict_schema_validation() {
    let output = validate(&manifests());
    let report = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}");
    for kind in [
        "deployment/grpc-echo",
        "service/grpc-echo",
        "service/grpc-echo-headless",
        "poddisruptionbudget/grpc-echo",
        "job/grpc-echo-bench",
    ] {
        assert!(
            report.contains(&format!("passed for resource {kind}")),
            "{kind} not checked:\n{report}"
        );
    }

    // The validator does reject a broken manifest.
    let broken = echo_tests::pki::temp_dir("deploy").join("broken.yaml");
    let deployment =
        std::fs::read_to_string(workspace_root().join("deploy/kubernetes/deployment.yaml"))
            .unwrap();
    std::fs::write(
        &broken,
        deployment.replace("replicas: 3", "replicas: three"),
    )
    .unwrap();
    assert!(!validate(&[broken]).status.success());
}

#[test]
fn the_pod_outlives_the_drain() {
    let deployment = workspace_root().join("deploy/kubernetes/deployment.yaml");
    let script = r#"
import sys, yaml
spec = yaml.safe_load(open(sys.argv[1]))["spec"]["template"]["spec"]
env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
grace = int(env["ECHO_SHUTDOWN_GRACE"].rstrip("s"))
print(spec["terminationGracePeriodSeconds"], grace, spec["containers"][0]["readinessProbe"]["grpc"]["port"])
"#;
    let mut command = Command::new(python());
    command.args(["-c", script]).arg(&deployment);
    let output = output_within(command, b"", COMMAND_TIMEOUT);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let values: Vec<u64> = String::from_utf8(output.stdout)
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let (termination, grace, probe_port) = (values[0], values[1], values[2]);
    let flush = echo_server::STREAM_END_FLUSH.as_secs();
    assert!(
        termination > grace + flush,
        "SIGKILL at {termination}s cuts the {grace}s + {flush}s drain short"
    );
    assert_eq!(probe_port, 50051);
}

/// What the deployment guide says of the manifests, read from them: gRPC probes on the
/// server's port, non-root with a read-only root and no capabilities,
/// requests and limits, and a headless Service for balancing clients.
#[test]
fn the_manifests_say_what_the_deployment_guide_says() {
    let script = r#"
import sys, yaml
docs = [d for path in sys.argv[1:] for d in yaml.safe_load_all(open(path)) if d]
kinds = {(d["kind"], d["metadata"]["name"]): d for d in docs}
pod = kinds[("Deployment", "grpc-echo")]["spec"]["template"]["spec"]
container = pod["containers"][0]
for probe in ("readinessProbe", "livenessProbe"):
    assert container[probe]["grpc"]["port"] == 50051, probe
# HTTP/3 on the same port over UDP, in the pods and the Service.
assert {"name": "grpc-h3", "containerPort": 50051, "protocol": "UDP"} in container["ports"]
assert {"name": "grpc-h3", "port": 50051, "targetPort": "grpc-h3", "protocol": "UDP"} in kinds[("Service", "grpc-echo")]["spec"]["ports"]
assert pod["securityContext"]["runAsNonRoot"] is True
assert pod["securityContext"]["runAsUser"] != 0
security = container["securityContext"]
assert security["readOnlyRootFilesystem"] is True
assert security["allowPrivilegeEscalation"] is False
assert security["capabilities"]["drop"] == ["ALL"]
for kind in ("requests", "limits"):
    assert {"cpu", "memory"} <= set(container["resources"][kind]), kind
headless = kinds[("Service", "grpc-echo-headless")]["spec"]
assert headless["clusterIP"] == "None"
assert headless["selector"] == kinds[("Service", "grpc-echo")]["spec"]["selector"]
assert kinds[("PodDisruptionBudget", "grpc-echo")]["spec"]["maxUnavailable"] == 1
bench = kinds[("Job", "grpc-echo-bench")]["spec"]
assert bench["completionMode"] == "Indexed"
assert bench["completions"] == bench["parallelism"] >= 2
worker = bench["template"]["spec"]["containers"][0]
assert worker["command"] == ["/echo-client"]
assert "--histogram-out=-" in worker["args"] and "bench" in worker["args"]
assert {"name": "ECHO_ADDR", "value": "http://grpc-echo:50051"} in worker["env"]
print("ok")
"#;
    let mut command = Command::new(python());
    command.args(["-c", script]).args(manifests());
    let output = output_within(command, b"", COMMAND_TIMEOUT);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
