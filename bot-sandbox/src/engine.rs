//! The wasmer engine bots run on: Cranelift with CPU metering compiled in,
//! and a memory limit enforced when memories are created and grown.
//!
//! Modules are compiled once at install and stored as wasmer artifacts;
//! the compiling and the loading engine must agree on tunables and
//! middlewares, so both are made by [`engine`] from the same limits.

use std::ptr::NonNull;
use std::sync::Arc;

use wasmer::sys::vm::{MemoryError, MemoryStyle, TableStyle, VMConfig, VMMemory, VMMemoryDefinition, VMTable, VMTableDefinition};
use wasmer::sys::{BaseTunables, CompilerConfig, Cranelift, EngineBuilder, Tunables};
use wasmer::wasmparser::Operator;
use wasmer::{Engine, ExternType, MemoryType, Module, Pages, TableType};
use wasmer_middlewares::Metering;

use crate::wasi;

/// Bytes in a wasm page.
pub const WASM_PAGE: u64 = 65_536;

/// Wasm operators one CPU second is taken to be worth when turning CPU
/// seconds into metering points (Cranelift code on a current x86 core runs
/// a few hundred million to a few billion simple operators a second).
pub const POINTS_PER_CPU_SECOND: u64 = 1_000_000_000;

/// Every operator costs one point: simple, and proportional enough to CPU
/// time for a budget (memory.grow and calls are capped elsewhere).
fn operator_cost(_operator: &Operator) -> u64 {
    1
}

/// Caps every linear memory at `max_pages`; everything else as wasmer's
/// defaults.
#[derive(Clone)]
struct LimitingTunables {
    max_pages: Pages,
    base: BaseTunables,
}

impl LimitingTunables {
    /// The memory type with its maximum lowered to the limit; an error if
    /// even its minimum is over it.
    fn limited(&self, requested: &MemoryType) -> Result<MemoryType, MemoryError> {
        if requested.minimum > self.max_pages {
            return Err(MemoryError::Generic(format!(
                "the module asks for {} bytes of memory at start; the limit is {} bytes",
                u64::from(requested.minimum.0) * WASM_PAGE,
                u64::from(self.max_pages.0) * WASM_PAGE
            )));
        }
        let mut adjusted = *requested;
        adjusted.maximum = Some(requested.maximum.map_or(self.max_pages, |m| m.min(self.max_pages)));
        Ok(adjusted)
    }
}

/// The native stack a bot's code runs on (wasmer's default is 1 MiB).
/// Compiled code keeps its frames there: the JavaScript engine's
/// interpreter needs several KiB per JavaScript call, so 1 MiB ended
/// ordinary recursion at a depth of about a thousand. Deeper still, the run
/// traps ("call stack exhausted"); metering bounds the time it takes.
pub const WASM_STACK_SIZE: usize = 8 << 20;

impl Tunables for LimitingTunables {
    fn vmconfig(&self) -> &VMConfig {
        &VMConfig { wasm_stack_size: Some(WASM_STACK_SIZE) }
    }

    fn memory_style(&self, memory: &MemoryType) -> MemoryStyle {
        self.base.memory_style(memory)
    }

    fn table_style(&self, table: &TableType) -> TableStyle {
        self.base.table_style(table)
    }

    fn create_host_memory(&self, ty: &MemoryType, style: &MemoryStyle) -> Result<VMMemory, MemoryError> {
        self.base.create_host_memory(&self.limited(ty)?, style)
    }

    unsafe fn create_vm_memory(
        &self,
        ty: &MemoryType,
        style: &MemoryStyle,
        vm_definition_location: NonNull<VMMemoryDefinition>,
    ) -> Result<VMMemory, MemoryError> {
        let limited = self.limited(ty)?;
        // SAFETY: the caller's guarantee about `vm_definition_location`
        // (valid, owned by the instance) is passed on unchanged.
        unsafe { self.base.create_vm_memory(&limited, style, vm_definition_location) }
    }

    fn create_host_table(&self, ty: &TableType, style: &TableStyle) -> Result<VMTable, String> {
        self.base.create_host_table(ty, style)
    }

    unsafe fn create_vm_table(
        &self,
        ty: &TableType,
        style: &TableStyle,
        vm_definition_location: NonNull<VMTableDefinition>,
    ) -> Result<VMTable, String> {
        // SAFETY: as above, the caller's guarantee is passed on.
        unsafe { self.base.create_vm_table(ty, style, vm_definition_location) }
    }
}

fn limiting_tunables(memory_limit: u64) -> LimitingTunables {
    let pages = u32::try_from((memory_limit / WASM_PAGE).max(1)).unwrap_or(u32::MAX).min(65_536);
    LimitingTunables { max_pages: Pages(pages), base: BaseTunables::new() }
}

/// The engine for compiling, with metering and memory capped at
/// `memory_limit` bytes (rounded down to whole pages, at least one).
pub fn engine(memory_limit: u64) -> Engine {
    let mut compiler = Cranelift::new();
    // The initial limit is replaced at every run (set_remaining_points).
    compiler.push_middleware(Arc::new(Metering::new(0, operator_cost)));
    let mut engine = EngineBuilder::new(compiler).engine();
    engine.set_tunables(limiting_tunables(memory_limit));
    engine.into()
}

/// The engine for running compiled modules: no compiler (the worker
/// program links none, so it starts faster), the same memory cap.
pub fn runtime_engine(memory_limit: u64) -> Engine {
    let mut engine = EngineBuilder::headless().engine();
    engine.set_tunables(limiting_tunables(memory_limit));
    engine.into()
}

/// Why a module cannot be installed, in words for the bot's author.
pub fn check_imports(module: &Module) -> Vec<String> {
    check_imports_of(module, false)
}

/// `script_allowed`: the module is the relay's own JavaScript engine,
/// which alone may ask for its bot's script (`chatmail.script`).
fn check_imports_of(module: &Module, script_allowed: bool) -> Vec<String> {
    let mut problems = Vec::new();
    for import in module.imports() {
        let (namespace, name) = (import.module(), import.name());
        match import.ty() {
            ExternType::Function(_) if namespace == wasi::MODULE && wasi::is_known(name) => {}
            ExternType::Function(_) if namespace == wasi::MODULE => {
                problems.push(format!("imports {namespace}.{name}, which is not a WASI preview 1 function"))
            }
            ExternType::Function(_) if namespace == wasi::HOST_MODULE && name == "fetch" => {}
            ExternType::Function(_) if namespace == wasi::HOST_MODULE && name == "script" && script_allowed => {}
            ExternType::Function(_) => problems.push(format!(
                "imports the function {name} from module {namespace:?}; bots may import only from {:?} (WASI preview 1) and {}.fetch",
                wasi::MODULE,
                wasi::HOST_MODULE
            )),
            other => problems.push(format!("imports {namespace}.{name} ({other:?}); bots may import only functions")),
        }
    }
    let exports_start = module.exports().any(|e| e.name() == "_start" && matches!(e.ty(), ExternType::Function(_)));
    if !exports_start {
        problems.push("exports no _start function: a bot must be a WASI command module (a program with main)".into());
    }
    let memories: Vec<_> = module.exports().filter(|e| matches!(e.ty(), ExternType::Memory(_))).collect();
    if !memories.iter().any(|e| e.name() == "memory") {
        problems.push("exports no memory named \"memory\" (WASI needs it)".into());
    }
    problems
}

/// Compiles `wasm` and checks it is a bot: a WASI command module with only
/// allowed imports. Errors are plain words, one problem each. Each module
/// gets an engine of its own: wasmer's metering middleware serves one
/// module only.
pub fn compile(memory_limit: u64, wasm: &[u8]) -> Result<Module, Vec<String>> {
    let engine = engine(memory_limit);
    let module = Module::new(&engine, wasm).map_err(|e| vec![format!("bot.wasm is not a valid WebAssembly module: {e}")])?;
    let problems = check_imports(&module);
    if problems.is_empty() {
        Ok(module)
    } else {
        Err(problems)
    }
}

/// Compiles the relay's JavaScript engine (for a bot whose package carries
/// `bot.js`): a WASI command module like a bot's, which may also import
/// `chatmail.script`. Metered and capped like any bot, so a script's loops
/// and allocations meet the same limits.
pub fn compile_js_engine(memory_limit: u64, wasm: &[u8]) -> Result<Module, String> {
    let engine = engine(memory_limit);
    let module = Module::new(&engine, wasm).map_err(|e| format!("the JavaScript engine is not a valid module: {e}"))?;
    let problems = check_imports_of(&module, true);
    if problems.is_empty() {
        Ok(module)
    } else {
        Err(format!("the JavaScript engine {}", problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wasm(text: &str) -> Vec<u8> {
        wat::parse_str(text).expect("wat")
    }

    #[test]
    fn only_wasi_command_modules_pass() {
        let good = wasm(r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1) (func (export "_start")))"#);
        assert!(compile(1 << 20, &good).is_ok());
        let table: &[(&str, &str)] = &[
            (r#"(module (import "env" "system" (func)) (memory (export "memory") 1) (func (export "_start")))"#, "from module \"env\""),
            (r#"(module (import "wasi_snapshot_preview1" "no_such" (func)) (memory (export "memory") 1) (func (export "_start")))"#, "not a WASI preview 1 function"),
            (r#"(module (memory (export "memory") 1) (func (export "main")))"#, "exports no _start"),
            (r#"(module (func (export "_start")))"#, "exports no memory"),
            (r#"(module (import "env" "mem" (memory 1)) (memory (export "memory") 1) (func (export "_start")))"#, "only functions"),
            // Only the relay's JavaScript engine may ask for a script.
            (r#"(module (import "chatmail" "script" (func (param i32 i32) (result i32))) (memory (export "memory") 1) (func (export "_start")))"#, "from module \"chatmail\""),
        ];
        for (text, want) in table {
            let problems = match compile(1 << 20, &wasm(text)) {
                Err(problems) => problems,
                Ok(_) => panic!("{text} passed"),
            };
            assert!(problems.iter().any(|p| p.contains(want)), "{text}: {problems:?}");
        }
        let engine_like = wasm(r#"(module (import "chatmail" "script" (func (param i32 i32) (result i32))) (memory (export "memory") 1) (func (export "_start")))"#);
        assert!(compile_js_engine(1 << 20, &engine_like).is_ok());
        let garbage = compile(1 << 20, b"\0asm\x01\0\0\0garbage").expect_err("garbage refused");
        assert!(garbage[0].starts_with("bot.wasm is not a valid WebAssembly module"), "{garbage:?}");
    }
}
