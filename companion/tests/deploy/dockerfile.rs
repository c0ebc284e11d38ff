//! The Dockerfile.

use super::*;

/// The Dockerfile, parsed: multi-stage, a small runtime base, the binary copied from the build
/// stage, port, exec-form entrypoint, health check, and a locked build with bpf-linker.
#[test]
fn dockerfile() {
    let text = read_deploy("Dockerfile");
    let dockerfile = Dockerfile::parse(&text).expect("the Dockerfile parses");
    let stages = dockerfile.stages();
    let stages: Vec<_> = stages.iter().collect();
    let froms = dockerfile
        .instructions
        .iter()
        .filter(|i| matches!(i, Instruction::From(_)))
        .count();
    assert!(
        froms >= 2 && stages.len() >= 2,
        "multi-stage: {froms} FROMs"
    );
    let (build, runtime) = (stages[stages.len() - 2], stages[stages.len() - 1]);

    // The build stage: bpf-linker installed, a locked release build of the service.
    let build_runs: Vec<String> = build
        .instructions
        .iter()
        .filter_map(|i| i.as_run())
        .map(|run| match (run.as_shell(), run.as_exec()) {
            (Some(shell), _) => shell.to_string(),
            (_, Some(exec)) => exec.as_str_vec().join(" "),
            _ => String::new(),
        })
        .collect();
    let words = |run: &String| -> Vec<String> {
        run.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(
        build_runs.iter().any(|run| {
            let w = words(run);
            run.contains("cargo install")
                && w.iter().any(|x| x == "bpf-linker")
                && w.iter().any(|x| x == "--locked")
        }),
        "the build stage installs bpf-linker (--locked): {build_runs:#?}"
    );
    assert!(
        build_runs.iter().any(|run| {
            let w = words(run);
            run.contains("cargo build")
                && w.iter().any(|x| x == "--locked")
                && w.iter().any(|x| x == "--release")
        }),
        "the build stage builds with --release --locked: {build_runs:#?}"
    );

    // The runtime stage: a small image.
    let StageParent::Image(base) = runtime.parent else {
        panic!(
            "the runtime stage is based on an image, not {:?}",
            runtime.parent
        )
    };
    let base_text = base.to_string();
    assert!(
        base.image.contains("distroless")
            || base.tag.as_deref().is_some_and(|t| t.contains("slim")),
        "the runtime base {base_text} is distroless or slim"
    );

    // The binary comes from the build stage.
    let copies: Vec<_> = runtime
        .instructions
        .iter()
        .filter_map(|i| i.as_copy())
        .collect();
    let build_name = build.name.clone();
    let from_build = copies
        .iter()
        .find(|c| {
            c.flags.iter().any(|f| {
                f.name.content == "from"
                    && (Some(&f.value.content) == build_name.as_ref()
                        || f.value.content == build.index.to_string())
            })
        })
        .unwrap_or_else(|| panic!("no COPY --from=<build stage> in the runtime stage"));
    let binary = from_build.destination.content.clone();
    assert!(binary.ends_with("/companion"), "the binary is at {binary}");

    let misc = |name: &str| -> Vec<String> {
        runtime
            .instructions
            .iter()
            .filter_map(|i| i.as_misc())
            .filter(|m| m.instruction.content.eq_ignore_ascii_case(name))
            .map(|m| m.arguments.to_string().trim().to_owned())
            .collect()
    };
    let exposed: Vec<String> = misc("EXPOSE")
        .iter()
        .flat_map(|a| a.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    assert!(
        exposed.iter().any(|p| p == "8801" || p == "8801/tcp"),
        "EXPOSE 8801: {exposed:?}"
    );

    let entrypoints: Vec<_> = runtime
        .instructions
        .iter()
        .filter_map(|i| i.as_entrypoint())
        .collect();
    let entrypoint = entrypoints.last().expect("an ENTRYPOINT");
    let exec = entrypoint
        .as_exec()
        .expect("ENTRYPOINT in exec form (the service gets the signals)");
    assert_eq!(
        exec.as_str_vec(),
        [binary.as_str()],
        "ENTRYPOINT runs the binary"
    );

    let healthchecks = misc("HEALTHCHECK");
    let healthcheck = healthchecks.last().expect("a HEALTHCHECK");
    let (_, command) = healthcheck
        .split_once("CMD")
        .unwrap_or_else(|| panic!("HEALTHCHECK without CMD: {healthcheck}"));
    let command: Vec<String> = serde_json::from_str(command.trim())
        .unwrap_or_else(|e| panic!("HEALTHCHECK CMD in exec form ({e}): {command}"));
    assert_eq!(
        command,
        [binary.as_str(), "health"],
        "the health check runs `companion health`"
    );
}
