//! A deterministic WASI preview1, written for this sandbox.
//!
//! Task modules see stdin, stdout, a capped stderr, their arguments, a
//! virtual clock and a seeded random stream, and nothing else: every file,
//! directory and socket call fails with `EBADF`/`ENOTCAPABLE`. Every function
//! of `wasi_snapshot_preview1` is defined, so modules from any toolchain
//! (Rust, wasi-libc, Go, Zig) link; only the ones above do anything.
//!
//! Why not wasmtime-wasi: it is built to give guests the host's clocks,
//! files and sockets, so making it deterministic means overriding its
//! clocks, randomness and `poll_oneoff` and still trusting the rest. Here the
//! whole surface is one file, audited at a glance, and a run costs no WASI
//! context setup.
//!
//! Time is virtual: a clock reads the fuel the run has consumed (one
//! nanosecond per unit of fuel) plus every interval the guest has slept. So
//! clocks advance, every replica sees the same times, and a `sleep` returns
//! at once instead of blocking in real time where fuel cannot stop it.

use crate::{Guest, HostStop};
use wasmtime::{Caller, Extern, Linker};

/// The import module every task function comes from.
pub const MODULE: &str = "wasi_snapshot_preview1";

// errno values of WASI preview1.
const SUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;
const ESPIPE: i32 = 70;
const ENOTCAPABLE: i32 = 76;

/// 2000-01-01T00:00:00Z: what the virtual wall clock reads at the start.
const REALTIME_EPOCH_NS: u64 = 946_684_800_000_000_000;

/// Every function of `wasi_snapshot_preview1`, for checking imports.
pub const FUNCTIONS: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

type R = wasmtime::Result<i32>;

/// The guest's memory and the store's data, borrowed together.
fn memory<'a>(caller: &'a mut Caller<'_, Guest>) -> Option<(&'a mut [u8], &'a mut Guest)> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Some(m.data_and_store_mut(caller)),
        _ => None,
    }
}

fn slice(mem: &[u8], ptr: i32, len: u32) -> Option<&[u8]> {
    let start = ptr as u32 as usize;
    mem.get(start..start.checked_add(len as usize)?)
}

fn slice_mut(mem: &mut [u8], ptr: i32, len: u32) -> Option<&mut [u8]> {
    let start = ptr as u32 as usize;
    mem.get_mut(start..start.checked_add(len as usize)?)
}

fn write_bytes(mem: &mut [u8], ptr: i32, bytes: &[u8]) -> Option<()> {
    slice_mut(mem, ptr, bytes.len() as u32)?.copy_from_slice(bytes);
    Some(())
}

fn write_u32(mem: &mut [u8], ptr: i32, v: u32) -> Option<()> {
    write_bytes(mem, ptr, &v.to_le_bytes())
}

fn write_u64(mem: &mut [u8], ptr: i32, v: u64) -> Option<()> {
    write_bytes(mem, ptr, &v.to_le_bytes())
}

/// The (pointer, length) pairs of an iovec array.
fn iovecs(mem: &[u8], iovs: i32, count: i32) -> Option<Vec<(i32, u32)>> {
    let count = count as u32;
    let table = slice(mem, iovs, count.checked_mul(8)?)?;
    Some(
        table
            .chunks_exact(8)
            .map(|c| {
                let ptr = u32::from_le_bytes(c[..4].try_into().expect("4 bytes"));
                let len = u32::from_le_bytes(c[4..].try_into().expect("4 bytes"));
                (ptr as i32, len)
            })
            .collect(),
    )
}

/// Writes a list of NUL-terminated strings the way `args_get` and
/// `environ_get` return them.
fn write_string_list(mem: &mut [u8], list: &[Vec<u8>], ptrs: i32, buf: i32) -> Option<()> {
    let mut at = buf as u32;
    for (i, item) in list.iter().enumerate() {
        write_u32(mem, ptrs.checked_add(i as i32 * 4)?, at)?;
        write_bytes(mem, at as i32, item)?;
        write_bytes(mem, (at + item.len() as u32) as i32, &[0])?;
        at = at.checked_add(item.len() as u32 + 1)?;
    }
    Some(())
}

/// The virtual time, in nanoseconds since the run started.
fn elapsed_ns(caller: &Caller<'_, Guest>) -> u64 {
    let remaining = caller.get_fuel().unwrap_or(0);
    let data = caller.data();
    data.fuel_limit
        .saturating_sub(remaining)
        .saturating_add(data.slept_ns)
}

fn errno(result: Option<i32>) -> R {
    Ok(result.unwrap_or(EFAULT))
}

/// Defines every preview1 function in `linker`.
pub fn add_to_linker(linker: &mut Linker<Guest>) -> wasmtime::Result<()> {
    let m = MODULE;

    linker.func_wrap(
        m,
        "args_get",
        |mut c: Caller<'_, Guest>, argv: i32, buf: i32| -> R {
            let Some((mem, g)) = memory(&mut c) else {
                return Ok(EFAULT);
            };
            errno(write_string_list(mem, &g.args, argv, buf).map(|_| SUCCESS))
        },
    )?;
    linker.func_wrap(
        m,
        "args_sizes_get",
        |mut c: Caller<'_, Guest>, argc: i32, size: i32| -> R {
            let Some((mem, g)) = memory(&mut c) else {
                return Ok(EFAULT);
            };
            let total: usize = g.args.iter().map(|a| a.len() + 1).sum();
            let count = g.args.len() as u32;
            errno((|| {
                write_u32(mem, argc, count)?;
                write_u32(mem, size, total as u32)?;
                Some(SUCCESS)
            })())
        },
    )?;
    linker.func_wrap(
        m,
        "environ_get",
        |_: Caller<'_, Guest>, _: i32, _: i32| -> R { Ok(SUCCESS) },
    )?;
    linker.func_wrap(
        m,
        "environ_sizes_get",
        |mut c: Caller<'_, Guest>, count: i32, size: i32| -> R {
            let Some((mem, _)) = memory(&mut c) else {
                return Ok(EFAULT);
            };
            errno((|| {
                write_u32(mem, count, 0)?;
                write_u32(mem, size, 0)?;
                Some(SUCCESS)
            })())
        },
    )?;

    linker.func_wrap(
        m,
        "clock_res_get",
        |mut c: Caller<'_, Guest>, id: i32, res: i32| -> R {
            if !(0..=3).contains(&id) {
                return Ok(EINVAL);
            }
            let Some((mem, _)) = memory(&mut c) else {
                return Ok(EFAULT);
            };
            errno(write_u64(mem, res, 1).map(|_| SUCCESS))
        },
    )?;
    linker.func_wrap(
        m,
        "clock_time_get",
        |mut c: Caller<'_, Guest>, id: i32, _precision: i64, out: i32| -> R {
            let elapsed = elapsed_ns(&c);
            let now = match id {
                0 => REALTIME_EPOCH_NS + elapsed, // realtime
                1..=3 => elapsed,                 // monotonic, process and thread CPU time
                _ => return Ok(EINVAL),
            };
            let Some((mem, _)) = memory(&mut c) else {
                return Ok(EFAULT);
            };
            errno(write_u64(mem, out, now).map(|_| SUCCESS))
        },
    )?;

    linker.func_wrap(
        m,
        "fd_read",
        |mut c: Caller<'_, Guest>, fd: i32, iovs: i32, n: i32, nread: i32| -> R {
            if fd != 0 {
                return Ok(if fd == 1 || fd == 2 {
                    ENOTCAPABLE
                } else {
                    EBADF
                });
            }
            let Some((mem, g)) = memory(&mut c) else {
                return Ok(EFAULT);
            };
            let Some(vecs) = iovecs(mem, iovs, n) else {
                return Ok(EFAULT);
            };
            let mut total = 0u32;
            for (ptr, len) in vecs {
                let rest = &g.stdin[g.stdin_pos..];
                let take = rest.len().min(len as usize);
                if write_bytes(mem, ptr, &rest[..take]).is_none() {
                    return Ok(EFAULT);
                }
                g.stdin_pos += take;
                total += take as u32;
                if take < len as usize {
                    break;
                }
            }
            errno(write_u32(mem, nread, total).map(|_| SUCCESS))
        },
    )?;
    linker.func_wrap(
        m,
        "fd_write",
        |mut c: Caller<'_, Guest>, fd: i32, iovs: i32, n: i32, nwritten: i32| -> R {
            if fd != 1 && fd != 2 {
                return Ok(if fd == 0 { ENOTCAPABLE } else { EBADF });
            }
            let Some((mem, g)) = memory(&mut c) else {
                return Ok(EFAULT);
            };
            let Some(vecs) = iovecs(mem, iovs, n) else {
                return Ok(EFAULT);
            };
            let mut total = 0u32;
            for (ptr, len) in vecs {
                let Some(bytes) = slice(mem, ptr, len) else {
                    return Ok(EFAULT);
                };
                if fd == 1 {
                    g.write_stdout(bytes)?;
                } else {
                    g.write_stderr(bytes);
                }
                total = total.wrapping_add(len);
            }
            errno(write_u32(mem, nwritten, total).map(|_| SUCCESS))
        },
    )?;
    linker.func_wrap(
        m,
        "fd_fdstat_get",
        |mut c: Caller<'_, Guest>, fd: i32, out: i32| -> R {
            const RIGHT_FD_READ: u64 = 1 << 1;
            const RIGHT_FD_WRITE: u64 = 1 << 6;
            let rights = match fd {
                0 => RIGHT_FD_READ,
                1 | 2 => RIGHT_FD_WRITE,
                _ => return Ok(EBADF),
            };
            let Some((mem, _)) = memory(&mut c) else {
                return Ok(EFAULT);
            };
            // fdstat: filetype u8, flags u16 at 2, rights_base u64 at 8,
            // rights_inheriting u64 at 16. Filetype "unknown": stdio is a pipe
            // here, never a terminal, so libc buffers it fully.
            let mut stat = [0u8; 24];
            stat[8..16].copy_from_slice(&rights.to_le_bytes());
            errno(write_bytes(mem, out, &stat).map(|_| SUCCESS))
        },
    )?;
    linker.func_wrap(
        m,
        "fd_filestat_get",
        |mut c: Caller<'_, Guest>, fd: i32, out: i32| -> R {
            if !(0..=2).contains(&fd) {
                return Ok(EBADF);
            }
            let Some((mem, _)) = memory(&mut c) else {
                return Ok(EFAULT);
            };
            errno(write_bytes(mem, out, &[0u8; 64]).map(|_| SUCCESS))
        },
    )?;
    linker.func_wrap(m, "fd_close", |_: Caller<'_, Guest>, fd: i32| -> R {
        Ok(if (0..=2).contains(&fd) {
            SUCCESS
        } else {
            EBADF
        })
    })?;
    linker.func_wrap(
        m,
        "fd_prestat_get",
        |_: Caller<'_, Guest>, _: i32, _: i32| -> R { Ok(EBADF) },
    )?;
    linker.func_wrap(
        m,
        "fd_prestat_dir_name",
        |_: Caller<'_, Guest>, _: i32, _: i32, _: i32| -> R { Ok(EBADF) },
    )?;
    linker.func_wrap(
        m,
        "fd_seek",
        |_: Caller<'_, Guest>, fd: i32, _: i64, _: i32, _: i32| -> R {
            Ok(stdio_or_badf(fd, ESPIPE))
        },
    )?;
    linker.func_wrap(m, "fd_tell", |_: Caller<'_, Guest>, fd: i32, _: i32| -> R {
        Ok(stdio_or_badf(fd, ESPIPE))
    })?;
    linker.func_wrap(m, "fd_sync", |_: Caller<'_, Guest>, fd: i32| -> R {
        Ok(stdio_or_badf(fd, SUCCESS))
    })?;
    linker.func_wrap(m, "fd_datasync", |_: Caller<'_, Guest>, fd: i32| -> R {
        Ok(stdio_or_badf(fd, SUCCESS))
    })?;
    linker.func_wrap(
        m,
        "fd_advise",
        |_: Caller<'_, Guest>, fd: i32, _: i64, _: i64, _: i32| -> R {
            Ok(stdio_or_badf(fd, ESPIPE))
        },
    )?;
    linker.func_wrap(
        m,
        "fd_allocate",
        |_: Caller<'_, Guest>, fd: i32, _: i64, _: i64| -> R { Ok(stdio_or_badf(fd, ENOTCAPABLE)) },
    )?;
    linker.func_wrap(
        m,
        "fd_fdstat_set_flags",
        |_: Caller<'_, Guest>, fd: i32, _: i32| -> R { Ok(stdio_or_badf(fd, ENOTCAPABLE)) },
    )?;
    linker.func_wrap(
        m,
        "fd_fdstat_set_rights",
        |_: Caller<'_, Guest>, fd: i32, _: i64, _: i64| -> R { Ok(stdio_or_badf(fd, ENOTCAPABLE)) },
    )?;
    linker.func_wrap(
        m,
        "fd_filestat_set_size",
        |_: Caller<'_, Guest>, fd: i32, _: i64| -> R { Ok(stdio_or_badf(fd, ENOTCAPABLE)) },
    )?;
    linker.func_wrap(
        m,
        "fd_filestat_set_times",
        |_: Caller<'_, Guest>, fd: i32, _: i64, _: i64, _: i32| -> R {
            Ok(stdio_or_badf(fd, ENOTCAPABLE))
        },
    )?;
    linker.func_wrap(
        m,
        "fd_pread",
        |_: Caller<'_, Guest>, fd: i32, _: i32, _: i32, _: i64, _: i32| -> R {
            Ok(stdio_or_badf(fd, ESPIPE))
        },
    )?;
    linker.func_wrap(
        m,
        "fd_pwrite",
        |_: Caller<'_, Guest>, fd: i32, _: i32, _: i32, _: i64, _: i32| -> R {
            Ok(stdio_or_badf(fd, ESPIPE))
        },
    )?;
    linker.func_wrap(
        m,
        "fd_readdir",
        |_: Caller<'_, Guest>, fd: i32, _: i32, _: i32, _: i64, _: i32| -> R {
            Ok(stdio_or_badf(fd, ENOTCAPABLE))
        },
    )?;
    linker.func_wrap(
        m,
        "fd_renumber",
        |_: Caller<'_, Guest>, fd: i32, _: i32| -> R { Ok(stdio_or_badf(fd, ENOTCAPABLE)) },
    )?;

    // No directory is preopened, so every path call names a descriptor the
    // guest cannot hold.
    linker.func_wrap(
        m,
        "path_create_directory",
        |_: Caller<'_, Guest>, _: i32, _: i32, _: i32| -> R { Ok(EBADF) },
    )?;
    linker.func_wrap(
        m,
        "path_filestat_get",
        |_: Caller<'_, Guest>, _: i32, _: i32, _: i32, _: i32, _: i32| -> R { Ok(EBADF) },
    )?;
    linker.func_wrap(
        m,
        "path_filestat_set_times",
        |_: Caller<'_, Guest>, _: i32, _: i32, _: i32, _: i32, _: i64, _: i64, _: i32| -> R {
            Ok(EBADF)
        },
    )?;
    linker.func_wrap(
        m,
        "path_link",
        |_: Caller<'_, Guest>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| -> R {
            Ok(EBADF)
        },
    )?;
    linker.func_wrap(
        m,
        "path_open",
        |_: Caller<'_, Guest>,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i64,
         _: i64,
         _: i32,
         _: i32|
         -> R { Ok(EBADF) },
    )?;
    linker.func_wrap(
        m,
        "path_readlink",
        |_: Caller<'_, Guest>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| -> R { Ok(EBADF) },
    )?;
    linker.func_wrap(
        m,
        "path_remove_directory",
        |_: Caller<'_, Guest>, _: i32, _: i32, _: i32| -> R { Ok(EBADF) },
    )?;
    linker.func_wrap(
        m,
        "path_rename",
        |_: Caller<'_, Guest>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| -> R { Ok(EBADF) },
    )?;
    linker.func_wrap(
        m,
        "path_symlink",
        |_: Caller<'_, Guest>, _: i32, _: i32, _: i32, _: i32, _: i32| -> R { Ok(EBADF) },
    )?;
    linker.func_wrap(
        m,
        "path_unlink_file",
        |_: Caller<'_, Guest>, _: i32, _: i32, _: i32| -> R { Ok(EBADF) },
    )?;

    linker.func_wrap(
        m,
        "sock_accept",
        |_: Caller<'_, Guest>, _: i32, _: i32, _: i32| -> R { Ok(ENOTCAPABLE) },
    )?;
    linker.func_wrap(
        m,
        "sock_recv",
        |_: Caller<'_, Guest>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| -> R {
            Ok(ENOTCAPABLE)
        },
    )?;
    linker.func_wrap(
        m,
        "sock_send",
        |_: Caller<'_, Guest>, _: i32, _: i32, _: i32, _: i32, _: i32| -> R { Ok(ENOTCAPABLE) },
    )?;
    linker.func_wrap(
        m,
        "sock_shutdown",
        |_: Caller<'_, Guest>, _: i32, _: i32| -> R { Ok(ENOTCAPABLE) },
    )?;

    linker.func_wrap(m, "poll_oneoff", poll_oneoff)?;
    linker.func_wrap(
        m,
        "proc_exit",
        |_: Caller<'_, Guest>, code: i32| -> wasmtime::Result<()> {
            Err(wasmtime::Error::new(HostStop::Exit(code)))
        },
    )?;
    linker.func_wrap(m, "proc_raise", |_: Caller<'_, Guest>, _: i32| -> R {
        Ok(ENOSYS)
    })?;
    linker.func_wrap(m, "sched_yield", |_: Caller<'_, Guest>| -> R {
        Ok(SUCCESS)
    })?;
    linker.func_wrap(
        m,
        "random_get",
        |mut c: Caller<'_, Guest>, buf: i32, len: i32| -> R {
            let Some((mem, g)) = memory(&mut c) else {
                return Ok(EFAULT);
            };
            let Some(out) = slice_mut(mem, buf, len as u32) else {
                return Ok(EFAULT);
            };
            for chunk in out.chunks_mut(8) {
                let word = g.next_random().to_le_bytes();
                chunk.copy_from_slice(&word[..chunk.len()]);
            }
            Ok(SUCCESS)
        },
    )?;
    Ok(())
}

fn stdio_or_badf(fd: i32, stdio: i32) -> i32 {
    if (0..=2).contains(&fd) { stdio } else { EBADF }
}

/// Every subscription fires at once. A clock subscription moves the virtual
/// clock to its deadline, so `sleep(d)` returns immediately having "slept" d;
/// stdin is always readable and stdout always writable.
fn poll_oneoff(mut c: Caller<'_, Guest>, subs: i32, events: i32, n: i32, nevents: i32) -> R {
    const SUB: u32 = 48;
    const EVENT: u32 = 32;
    let n = n as u32;
    if n == 0 {
        return Ok(EINVAL);
    }
    let elapsed = elapsed_ns(&c);
    let Some((mem, g)) = memory(&mut c) else {
        return Ok(EFAULT);
    };
    let Some(table) = n.checked_mul(SUB).and_then(|len| slice(mem, subs, len)) else {
        return Ok(EFAULT);
    };
    let table = table.to_vec();
    let mut advance = 0u64;
    for (i, sub) in table.chunks_exact(SUB as usize).enumerate() {
        let userdata = &sub[0..8];
        let tag = sub[8];
        let mut event = [0u8; EVENT as usize];
        event[0..8].copy_from_slice(userdata);
        event[10] = tag;
        match tag {
            0 => {
                // clock: id u32 at 16, timeout u64 at 24, flags u16 at 40.
                let timeout = u64::from_le_bytes(sub[24..32].try_into().expect("8 bytes"));
                let absolute =
                    u16::from_le_bytes(sub[40..42].try_into().expect("2 bytes")) & 1 == 1;
                let wait = if absolute {
                    let clock_id = u32::from_le_bytes(sub[16..20].try_into().expect("4 bytes"));
                    let now = if clock_id == 0 {
                        REALTIME_EPOCH_NS + elapsed
                    } else {
                        elapsed
                    };
                    timeout.saturating_sub(now)
                } else {
                    timeout
                };
                advance = advance.max(wait);
            }
            1 | 2 => {
                // fd_read / fd_write: fd u32 at 16; nbytes u64 at 16 of the event.
                let fd = u32::from_le_bytes(sub[16..20].try_into().expect("4 bytes"));
                let ready = match (tag, fd) {
                    (1, 0) => Some((g.stdin.len() - g.stdin_pos) as u64),
                    (2, 1 | 2) => Some(1),
                    _ => None,
                };
                match ready {
                    Some(bytes) => event[16..24].copy_from_slice(&bytes.to_le_bytes()),
                    None => event[8..10].copy_from_slice(&(EBADF as u16).to_le_bytes()),
                }
            }
            _ => event[8..10].copy_from_slice(&(EINVAL as u16).to_le_bytes()),
        }
        let at = events.wrapping_add((i as u32 * EVENT) as i32);
        if write_bytes(mem, at, &event).is_none() {
            return Ok(EFAULT);
        }
    }
    g.slept_ns = g.slept_ns.saturating_add(advance);
    errno(write_u32(mem, nevents, n).map(|_| SUCCESS))
}
