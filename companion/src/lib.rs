//! companion: which processes run inside each container of a Linux host.
//!
//! Data flows one way: the [`tracker`] knows which processes exist and in which container; the
//! [`sampler`] reads /proc for those processes every period; the [`history`] keeps the samples and
//! computes CPU shares over them, the [`inventory`] sums them up per container; the [`store`]
//! publishes all that after each sample; the [`api`] answers from the newest publication
//! ([`metrics`] renders it for Prometheus).

pub mod allocator;
pub mod api;
pub mod cgroup;
pub mod cli;
pub mod client;
pub mod history;
pub mod inventory;
pub mod metrics;
pub mod privileges;
pub mod procfs;
pub mod sampler;
pub mod seccomp;
pub mod service;
pub mod store;
pub mod tracker;
