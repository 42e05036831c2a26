//! The deterministic sandbox that runs task modules: the only place that
//! configures wasmtime.
//!
//! The coordinator (split, reduce, compare) and the worker (run) both use
//! this crate, so both run modules under the same engine settings and count
//! fuel identically. A run is a fresh [`wasmtime::Store`] over a module that
//! was compiled once ([`Program`]); it gets stdin, a capped stdout and
//! stderr, its mode as the first argument, and the deterministic WASI of
//! [`wasi`]. It ends in a [`Report`]: the exit code and output, or a
//! [`Failure`] of a kind that every honest replica would hit the same way.
//!
//! Determinism (see ARCHITECTURE.md): threads and relaxed SIMD are off, NaN
//! canonicalization is off (replicas are compared within one CPU
//! architecture), clocks and randomness are virtual, fuel is the CPU limit.

pub mod wasi;

use protocol::{BlobHash, FailureKind, Limits};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use wasmtime::{Config, Engine, InstancePre, Linker, Module, ResourceLimiter, Store, Trap};

/// The engine and its settings, as workers report them. Two sandboxes with
/// the same `ENGINE` count fuel identically; bump the suffix whenever a
/// setting that changes fuel or output changes.
pub const ENGINE: &str = "wasmtime-48.0.8/det-v1";

/// The most a module may write to stderr; the rest is dropped. Stderr is for
/// people reading a failure, never compared.
const STDERR_CAP: usize = 16 * 1024;

/// The most table elements a module may grow a table to.
const TABLE_ELEMENTS_CAP: usize = 1 << 20;

/// The mode a task module runs in: its first argument (the task ABI).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Split,
    Run,
    Reduce,
    Compare,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Split => "split",
            Mode::Run => "run",
            Mode::Reduce => "reduce",
            Mode::Compare => "compare",
        }
    }
}

/// Why a module was refused before it ever ran.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("not a WebAssembly module: the file does not start with the `\\0asm` magic bytes")]
    NotWasm,
    #[error("this is a WebAssembly component; wasm@home runs core modules built for wasm32-wasip1")]
    Component,
    #[error("the module is not valid WebAssembly for this sandbox: {0}")]
    Invalid(String),
    #[error(
        "the module imports `{module}.{name}`, which the sandbox does not provide: tasks may import only WASI preview1 functions (`wasi_snapshot_preview1`)"
    )]
    ForbiddenImport { module: String, name: String },
    #[error("the module imports `{module}.{name}` with the wrong type: {detail}")]
    BadImport {
        module: String,
        name: String,
        detail: String,
    },
    #[error(
        "the module exports no `_start` function: build it as a WASI command (a program with `main`) for wasm32-wasip1"
    )]
    NoStart,
    #[error("the module exports no memory named `memory`, which WASI needs")]
    NoMemory,
}

/// A compiled module, ready to instantiate many times.
#[derive(Clone)]
pub struct Program {
    pre: InstancePre<Guest>,
    hash: BlobHash,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program").field("hash", &self.hash).finish()
    }
}

impl Program {
    /// The sha256 of the module's bytes.
    pub fn hash(&self) -> BlobHash {
        self.hash
    }

    /// The compiled form, for the local on-disk cache of this engine.
    pub fn serialize(&self) -> wasmtime::Result<Vec<u8>> {
        self.pre.module().serialize()
    }
}

/// What a run failed with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

/// How one run ended.
#[derive(Debug)]
pub struct Report {
    /// `Ok(exit code)` if the module ran to its end (exit code 0 is
    /// success), or the failure that stopped it.
    pub result: Result<i32, Failure>,
    /// Everything the module wrote to stdout (empty when streamed away).
    pub stdout: Vec<u8>,
    /// The first [`STDERR_CAP`] bytes the module wrote to stderr.
    pub stderr: Vec<u8>,
    /// Fuel consumed: deterministic for a given module, mode and input.
    pub fuel_used: u64,
}

impl Report {
    /// The stdout of a run that exited 0, or the failure: how `run` and
    /// `split` results are read. A non-zero exit is a failure that carries
    /// the tail of stderr, where programs say why.
    pub fn into_output(self) -> Result<Vec<u8>, Failure> {
        match self.result {
            Ok(0) => Ok(self.stdout),
            Ok(code) => {
                let stderr = String::from_utf8_lossy(&self.stderr);
                let tail: String = stderr
                    .trim_end()
                    .chars()
                    .rev()
                    .take(400)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                let mut message = format!("{EXIT_STATUS_PREFIX}{code}");
                if !tail.is_empty() {
                    message.push_str(": ");
                    message.push_str(&tail);
                }
                Err(Failure {
                    kind: FailureKind::ExitCode,
                    message,
                })
            }
            Err(f) => Err(f),
        }
    }
}

/// How the message of a non-zero exit ([`FailureKind::ExitCode`]) begins,
/// before the status.
const EXIT_STATUS_PREFIX: &str = "the module exited with status ";

/// The exit status a failure's message names, as [`Report::into_output`]
/// writes it (what a coordinator shows of a replica's failure; the message
/// came from a worker, so a malformed one names none).
pub fn exit_status_in(message: &str) -> Option<i32> {
    let rest = message.strip_prefix(EXIT_STATUS_PREFIX)?;
    let digits = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '-'))
        .map_or(rest, |end| &rest[..end]);
    digits.parse().ok()
}

/// Receives streamed stdout; returns `false` to stop the run.
pub type Sink = Box<dyn FnMut(&[u8]) -> bool + Send>;

/// Where a run's stdout goes.
pub enum Stdout {
    /// Kept in memory, up to the run's `output_bytes`.
    Capture,
    /// Handed to a function as it is written (split output, which may be
    /// far larger than memory should hold). The function returns `false` to
    /// stop the run. `output_bytes` still caps the total.
    Stream(Sink),
}

impl std::fmt::Debug for Stdout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stdout::Capture => "Stdout::Capture",
            Stdout::Stream(_) => "Stdout::Stream",
        })
    }
}

/// Why the host stopped a guest. Carried through wasmtime as the error of a
/// host call or of the resource limiter, then classified.
#[derive(Debug)]
pub(crate) enum HostStop {
    Exit(i32),
    OutputTooLarge { limit: u64 },
    MemoryTooLarge { desired: usize, limit: u64 },
    StreamClosed,
}

impl std::fmt::Display for HostStop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostStop::Exit(code) => write!(f, "exit with status {code}"),
            HostStop::OutputTooLarge { limit } => {
                write!(
                    f,
                    "the module wrote more than the output limit of {limit} bytes"
                )
            }
            HostStop::MemoryTooLarge { desired, limit } => write!(
                f,
                "the module asked for {} of memory; the limit is {}",
                human_bytes(*desired as u64),
                human_bytes(*limit)
            ),
            HostStop::StreamClosed => f.write_str("the reader of the module's output went away"),
        }
    }
}

impl std::error::Error for HostStop {}

fn human_bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{n} bytes")
    }
}

/// The state of one run: what the WASI functions read and write.
#[allow(
    missing_debug_implementations,
    reason = "holds a closure; never printed"
)]
pub struct Guest {
    args: Vec<Vec<u8>>,
    stdin: Vec<u8>,
    stdin_pos: usize,
    stdout: Vec<u8>,
    stdout_written: u64,
    stdout_limit: u64,
    stdout_stream: Option<Sink>,
    stderr: Vec<u8>,
    memory_limit: u64,
    fuel_limit: u64,
    slept_ns: u64,
    rng: u64,
}

impl Guest {
    fn write_stdout(&mut self, bytes: &[u8]) -> wasmtime::Result<()> {
        self.stdout_written += bytes.len() as u64;
        if self.stdout_written > self.stdout_limit {
            return Err(wasmtime::Error::new(HostStop::OutputTooLarge {
                limit: self.stdout_limit,
            }));
        }
        match &mut self.stdout_stream {
            Some(stream) => {
                if !stream(bytes) {
                    return Err(wasmtime::Error::new(HostStop::StreamClosed));
                }
            }
            None => self.stdout.extend_from_slice(bytes),
        }
        Ok(())
    }

    fn write_stderr(&mut self, bytes: &[u8]) {
        let room = STDERR_CAP.saturating_sub(self.stderr.len());
        self.stderr
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// SplitMix64: a fixed-seed stream, the same in every replica.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl ResourceLimiter for Guest {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Trap rather than let memory.grow return -1: the unit fails with a
        // clear "out of memory" on every replica instead of whatever the
        // guest's allocator does next.
        if desired as u64 > self.memory_limit {
            return Err(wasmtime::Error::new(HostStop::MemoryTooLarge {
                desired,
                limit: self.memory_limit,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS_CAP)
    }

    fn instances(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        4
    }
}

/// One engine and one linker, shared by every run in the process.
#[derive(Clone)]
pub struct Sandbox {
    engine: Engine,
    linker: Arc<Linker<Guest>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("engine", &ENGINE).finish()
    }
}

impl Sandbox {
    /// Builds the engine with the production settings.
    pub fn new() -> wasmtime::Result<Self> {
        let mut config = Config::new();
        config
            .consume_fuel(true)
            // Nondeterministic proposals stay off: relaxed SIMD's results
            // differ by CPU; threads interleave.
            .wasm_relaxed_simd(false)
            .wasm_memory64(false)
            // NaN bits differ only across architectures, and replicas are
            // compared within one; canonicalizing costs 5-10x on float code.
            .cranelift_nan_canonicalization(false)
            // Fixed, so stack overflow happens at the same depth everywhere
            // the same compiled code runs.
            .max_wasm_stack(1 << 20)
            .parallel_compilation(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasi::add_to_linker(&mut linker)?;
        Ok(Sandbox {
            engine,
            linker: Arc::new(linker),
        })
    }

    /// A key for on-disk caches of compiled code: it changes whenever this
    /// engine could not load code another engine compiled.
    pub fn compatibility_key(&self) -> String {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ENGINE.hash(&mut h);
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("{:016x}", h.finish())
    }

    /// Checks that `wasm` is a task module this sandbox can run, and
    /// compiles it.
    pub fn compile(&self, wasm: &[u8]) -> Result<Program, ModuleError> {
        if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
            return Err(ModuleError::NotWasm);
        }
        // Core modules have version 1 and layer 0; components layer 1.
        if wasm[6..8] != [0, 0] {
            return Err(ModuleError::Component);
        }
        let module =
            Module::new(&self.engine, wasm).map_err(|e| ModuleError::Invalid(format!("{e:#}")))?;
        self.prepare(module, BlobHash::of(wasm))
    }

    /// Loads code that this process's engine compiled earlier and
    /// [`Program::serialize`]d into its own cache. Never call it with bytes
    /// from anywhere else: compiled code runs unchecked.
    #[allow(unsafe_code, reason = "loading our own cached compiled code")]
    pub fn load_compiled(&self, compiled: &[u8], hash: BlobHash) -> wasmtime::Result<Program> {
        // SAFETY: the bytes come from `Program::serialize` of an engine with
        // the same compatibility key, written by this program to its own
        // cache directory; wasmtime also checks the engine settings.
        let module = unsafe { Module::deserialize(&self.engine, compiled)? };
        self.prepare(module, hash)
            .map_err(|e| wasmtime::Error::msg(e.to_string()))
    }

    fn prepare(&self, module: Module, hash: BlobHash) -> Result<Program, ModuleError> {
        for import in module.imports() {
            if import.module() != wasi::MODULE || !wasi::FUNCTIONS.contains(&import.name()) {
                return Err(ModuleError::ForbiddenImport {
                    module: import.module().to_string(),
                    name: import.name().to_string(),
                });
            }
        }
        match module.get_export("_start") {
            Some(wasmtime::ExternType::Func(f))
                if f.params().len() == 0 && f.results().len() == 0 => {}
            _ => return Err(ModuleError::NoStart),
        }
        if !matches!(
            module.get_export("memory"),
            Some(wasmtime::ExternType::Memory(_))
        ) {
            return Err(ModuleError::NoMemory);
        }
        let pre = self.linker.instantiate_pre(&module).map_err(|e| {
            let detail = format!("{e:#}");
            let import = module
                .imports()
                .find(|i| detail.contains(i.name()))
                .map(|i| (i.module().to_string(), i.name().to_string()))
                .unwrap_or_default();
            ModuleError::BadImport {
                module: import.0,
                name: import.1,
                detail,
            }
        })?;
        Ok(Program { pre, hash })
    }

    /// Runs `program` in `mode` with `input` on stdin, under `limits`.
    pub fn run(
        &self,
        program: &Program,
        mode: Mode,
        input: &[u8],
        limits: &Limits,
        stdout: Stdout,
    ) -> Report {
        self.execute(program, mode, input, limits, stdout, None)
    }

    /// Like [`Sandbox::run`], but the run stops every [`SLICE_FUEL`] of fuel
    /// and calls `pacer` with the fuel used so far, on the calling thread.
    /// The pacer may block (to pause the run, or to hold a CPU ceiling) and
    /// returns [`Pace::Stop`] to abandon the run, which then fails as a
    /// `worker_error`. Pacing changes neither the fuel used nor the output:
    /// the fuel between two stops is the same counter, handed out in slices.
    pub fn run_paced(
        &self,
        program: &Program,
        mode: Mode,
        input: &[u8],
        limits: &Limits,
        stdout: Stdout,
        pacer: &mut dyn FnMut(u64) -> Pace,
    ) -> Report {
        self.execute(program, mode, input, limits, stdout, Some(pacer))
    }

    fn execute(
        &self,
        program: &Program,
        mode: Mode,
        input: &[u8],
        limits: &Limits,
        stdout: Stdout,
        pacer: Option<&mut dyn FnMut(u64) -> Pace>,
    ) -> Report {
        let (stdout_stream, stdout_capacity) = match stdout {
            Stdout::Capture => (None, (limits.output_bytes as usize).min(64 * 1024)),
            Stdout::Stream(f) => (Some(f), 0),
        };
        let guest = Guest {
            args: vec![b"task".to_vec(), mode.as_str().as_bytes().to_vec()],
            stdin: input.to_vec(),
            stdin_pos: 0,
            stdout: Vec::with_capacity(stdout_capacity),
            stdout_written: 0,
            stdout_limit: limits.output_bytes,
            stdout_stream,
            stderr: Vec::new(),
            memory_limit: limits.memory_bytes,
            fuel_limit: limits.fuel,
            slept_ns: 0,
            rng: 0x7761_736D_4068_6F6D, // "wasm@hom"
        };
        let mut store = Store::new(&self.engine, guest);
        store.limiter(|g| g);
        store
            .set_fuel(limits.fuel)
            .expect("fuel is enabled in this engine");

        let result = match pacer {
            None => program
                .pre
                .instantiate(&mut store)
                .and_then(|instance| instance.get_typed_func::<(), ()>(&mut store, "_start"))
                .and_then(|start| start.call(&mut store, ())),
            Some(pacer) => {
                store
                    .fuel_async_yield_interval(Some(SLICE_FUEL))
                    .expect("fuel is enabled in this engine");
                let run = async {
                    let instance = program.pre.instantiate_async(&mut store).await?;
                    let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                    start.call_async(&mut store, ()).await
                };
                drive(run, pacer)
            }
        };
        let fuel_used = limits.fuel - store.get_fuel().unwrap_or(0);
        let result = match result {
            Ok(()) => Ok(0),
            Err(e) => classify(e),
        };
        let guest = store.into_data();
        Report {
            result,
            stdout: guest.stdout,
            stderr: guest.stderr,
            fuel_used,
        }
    }
}

/// The fuel a paced run burns between two calls of its pacer: a few
/// milliseconds of work on a current CPU, so pausing and duty-cycling react
/// quickly while the stops cost nothing measurable.
pub const SLICE_FUEL: u64 = 10_000_000;

/// What a pacer tells a paced run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    Continue,
    Stop,
}

/// Why a paced run ended early: the pacer said stop.
#[derive(Debug)]
struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the worker stopped the run before it finished")
    }
}

impl std::error::Error for Stopped {}

/// Polls a run to its end on this thread. The run is pending only when it
/// used up a slice of fuel (no host function here is asynchronous), so
/// each pending poll is one slice: the pacer is told the fuel used so far
/// and may block before the run goes on.
fn drive(
    run: impl std::future::Future<Output = wasmtime::Result<()>>,
    pacer: &mut dyn FnMut(u64) -> Pace,
) -> wasmtime::Result<()> {
    let mut run = std::pin::pin!(run);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut slices = 0u64;
    loop {
        match run.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(result) => return result,
            std::task::Poll::Pending => {
                slices += 1;
                if pacer(slices * SLICE_FUEL) == Pace::Stop {
                    return Err(wasmtime::Error::new(Stopped));
                }
            }
        }
    }
}

/// Sorts an error out of wasmtime into an exit code or a failure kind.
fn classify(e: wasmtime::Error) -> Result<i32, Failure> {
    let failure = |kind, message: String| Err(Failure { kind, message });
    if e.downcast_ref::<Stopped>().is_some() {
        return failure(FailureKind::WorkerError, Stopped.to_string());
    }
    if let Some(stop) = e.downcast_ref::<HostStop>() {
        return match stop {
            HostStop::Exit(code) => Ok(*code),
            HostStop::OutputTooLarge { .. } => {
                failure(FailureKind::OutputTooLarge, stop.to_string())
            }
            HostStop::MemoryTooLarge { .. } => failure(FailureKind::OutOfMemory, stop.to_string()),
            HostStop::StreamClosed => failure(FailureKind::WorkerError, stop.to_string()),
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => failure(
            FailureKind::OutOfFuel,
            "the module used all its fuel (the job's CPU limit)".into(),
        ),
        Some(trap) => failure(FailureKind::Trap, format!("the module trapped: {trap}")),
        None => failure(FailureKind::Trap, format!("the module failed: {e:#}")),
    }
}

#[cfg(test)]
mod tests;
