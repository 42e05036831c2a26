//! End-to-end tests: the real coordinator and real workers over loopback
//! HTTP, running the real sample tasks in the real sandbox.

mod bans;
mod browser;
mod chaos;
mod compare;
mod dashboard;
mod edge;
mod follow;
mod heartbeats;
mod honest;
mod hostile;
mod leases;
mod metrics;
mod openapi;
mod quota_lockout;
mod restart;
mod submissions;
mod submitters;
mod trust;
mod uploads;
mod worker_process;
mod worker_restart;
