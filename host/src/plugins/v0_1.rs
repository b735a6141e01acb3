//! The 0.1.0 plugin world (`wit/v0.1/plugin.wit`), for components built before 0.2.0 added the
//! `hold` verdict: its bindings, and the conversions to and from the current world's types, so
//! the rest of the engine speaks only the current one.

use super::bindings::agent_inbox::plugin::{host, types as wit};

/// Generated bindings for the 0.1.0 world.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1",
        world: "plugin",
        imports: { default: async },
        exports: { default: async },
    });
}

use bindings::agent_inbox::plugin::{host as old_host, types as old};
pub(super) use bindings::{Plugin, PluginPre};

impl old::Host for super::State {}

impl old_host::Host for super::State {
    async fn log(
        &mut self,
        level: old_host::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) {
        let level = match level {
            old_host::Level::Trace => host::Level::Trace,
            old_host::Level::Debug => host::Level::Debug,
            old_host::Level::Info => host::Level::Info,
            old_host::Level::Warn => host::Level::Warn,
            old_host::Level::Error => host::Level::Error,
        };
        host::Host::log(self, level, message, fields).await;
    }
}

pub(super) fn message(m: &wit::Message) -> old::Message {
    old::Message {
        id: m.id.clone(),
        route: m.route.clone(),
        sender: m.sender.clone(),
        msg_type: m.msg_type.clone(),
        payload: m.payload.clone(),
        thread_id: m.thread_id.clone(),
        in_reply_to: m.in_reply_to.clone(),
        hops: m.hops,
    }
}

pub(super) fn context(c: &wit::ReplyContext) -> old::ReplyContext {
    old::ReplyContext {
        url: c.url.clone(),
        auth_header: c.auth_header.clone(),
        reply_types: c.reply_types.clone(),
        deadline: c.deadline.clone(),
    }
}

pub(super) fn reply(r: &wit::Reply) -> old::Reply {
    old::Reply {
        msg_type: r.msg_type.clone(),
        payload: r.payload.clone(),
    }
}

fn rewrite(r: old::Rewrite) -> wit::Rewrite {
    wit::Rewrite {
        msg_type: r.msg_type,
        payload: r.payload,
    }
}

fn rejection(r: old::Rejection) -> wit::Rejection {
    wit::Rejection {
        status: r.status,
        reason: r.reason,
    }
}

pub(super) fn message_verdict(v: old::MessageVerdict) -> wit::MessageVerdict {
    match v {
        old::MessageVerdict::Accept => wit::MessageVerdict::Accept,
        old::MessageVerdict::Rewrite(r) => wit::MessageVerdict::Rewrite(rewrite(r)),
        old::MessageVerdict::RouteTo(r) => wit::MessageVerdict::RouteTo(wit::Reroute {
            route: r.route,
            rewrite: r.rewrite.map(rewrite),
        }),
        old::MessageVerdict::Reject(r) => wit::MessageVerdict::Reject(rejection(r)),
    }
}

pub(super) fn reply_verdict(v: old::ReplyVerdict) -> wit::ReplyVerdict {
    match v {
        old::ReplyVerdict::Accept => wit::ReplyVerdict::Accept,
        old::ReplyVerdict::Relay(r) => wit::ReplyVerdict::Relay(wit::Relay {
            rewrite: r.rewrite.map(rewrite),
            to: r.to,
        }),
        old::ReplyVerdict::Reject(r) => wit::ReplyVerdict::Reject(rejection(r)),
    }
}
