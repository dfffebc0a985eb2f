//! The release workflow cannot run here, so it is linted: it parses, triggers on v* tags, builds
//! both architectures with `cargo xtask dist`, and publishes the binaries with SHA256SUMS.

use butane::yaml::{self, Node};

fn text(node: Option<&Node>) -> &str {
    node.and_then(Node::text).unwrap_or_default()
}

fn steps(job: &Node) -> Vec<&Node> {
    match job.get("steps") {
        Some(Node::Seq(steps, _)) => steps.iter().collect(),
        _ => Vec::new(),
    }
}

#[test]
fn the_release_workflow_builds_both_architectures_and_publishes_sums() {
    let path = xtask::root().join(".github/workflows/release.yml");
    let source = std::fs::read_to_string(&path).unwrap();
    let workflow = yaml::parse(&source).unwrap_or_else(|e| panic!("{}: {e}", path.display()));

    let tags = workflow.get("on").and_then(|on| on.get("push")).and_then(|p| p.get("tags"));
    assert!(
        matches!(tags, Some(Node::Seq(t, _)) if t.iter().any(|t| t.text() == Some("v*"))),
        "not triggered by v* tags"
    );

    let jobs = workflow.get("jobs").expect("jobs");
    let build = jobs.get("build").expect("a build job");
    let Some(Node::Seq(include, _)) =
        build.get("strategy").and_then(|s| s.get("matrix")).and_then(|m| m.get("include"))
    else {
        panic!("the build job has no matrix include list");
    };
    let targets: Vec<&str> = include.iter().map(|i| text(i.get("target"))).collect();
    assert_eq!(targets, ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"]);
    assert!(
        include.iter().all(|i| !text(i.get("runner")).is_empty()),
        "every target needs a runner"
    );
    let runs: Vec<&str> = steps(build).iter().map(|s| text(s.get("run"))).collect();
    assert!(
        runs.iter().any(|r| r.starts_with("cargo xtask dist --target ${{ matrix.target }}")),
        "{runs:?}"
    );

    let publish = jobs.get("publish").expect("a publish job");
    assert_eq!(text(publish.get("needs")), "build");
    let publish_steps = steps(publish);
    assert!(
        publish_steps.iter().any(|s| text(s.get("run")).contains("sha256sum -c SHA256SUMS")),
        "sums are not verified"
    );
    let uploads = publish_steps
        .iter()
        .find_map(|s| s.get("with").and_then(|w| w.get("files")))
        .map(|f| text(Some(f)));
    assert!(
        uploads.is_some_and(|f| f.contains("SHA256SUMS") && f.contains("*-linux-*")),
        "{uploads:?}"
    );
    for job in [build, publish] {
        for step in steps(job) {
            let uses = text(step.get("uses"));
            assert!(uses.is_empty() || uses.contains('@'), "unpinned action {uses}");
        }
    }
}
