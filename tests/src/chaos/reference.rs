//! The clean run a chaos run is compared with: the job split, run and
//! reduced in this process, with the same sandbox.

use super::*;

/// The clean run, in this process: the module split, run and reduced by
/// the same sandbox the worker and the coordinator use.
#[derive(Debug)]
pub struct Reference {
    pub outputs: Vec<Vec<u8>>,
    pub fuel: Vec<u64>,
    pub job_output: Vec<u8>,
}

pub fn reference(module: &[u8], input: &[u8], limits: &Limits) -> anyhow::Result<Reference> {
    use sandbox::{Mode, Sandbox, Stdout};
    let config = coordinator::Config::new("unused");
    let sandbox = Sandbox::new().map_err(|e| anyhow!("sandbox: {e:?}"))?;
    let program = sandbox
        .compile(module)
        .map_err(|e| anyhow!("compile: {e:?}"))?;
    let split = sandbox
        .run(
            &program,
            Mode::Split,
            input,
            &config.split_limits,
            Stdout::Capture,
        )
        .into_output()
        .map_err(|e| anyhow!("split: {e:?}"))?;
    let inputs = frame::decode(&split).map_err(|e| anyhow!("split output: {e:?}"))?;
    let (mut outputs, mut fuel) = (Vec::new(), Vec::new());
    for unit in inputs {
        let report = sandbox.run(&program, Mode::Run, unit, limits, Stdout::Capture);
        fuel.push(report.fuel_used);
        outputs.push(report.into_output().map_err(|e| anyhow!("run: {e:?}"))?);
    }
    let framed = frame::encode(outputs.iter().map(|o| &o[..]));
    let report = sandbox.run(
        &program,
        Mode::Reduce,
        &framed,
        &config.reduce_limits,
        Stdout::Capture,
    );
    let job_output = match report.result {
        // The SDK's answer for a mode a task does not implement.
        Ok(64) => framed,
        _ => report.into_output().map_err(|e| anyhow!("reduce: {e:?}"))?,
    };
    Ok(Reference {
        outputs,
        fuel,
        job_output,
    })
}
