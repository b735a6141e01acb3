//! The agent card (`/.well-known/agent-card.json`), built from the config in force: the A2A-enabled
//! routes are its skills, the bearer scheme its security. Pure; a reload changes the card.

use serde_json::{Value, json};

use crate::config::Config;

/// The security scheme's name on the card.
pub const SCHEME: &str = "bearer";

/// The card, with `base` as the inbox's public URL (no trailing slash).
pub fn card(config: &Config, base: &str) -> Value {
    let a2a = config.a2a.as_ref();
    let skills: Vec<Value> = config
        .routes
        .values()
        .filter_map(|r| r.a2a.as_ref())
        .map(|a| {
            let tags = if a.tags.is_empty() {
                vec![a.msg_type.clone()]
            } else {
                a.tags.clone()
            };
            let mut skill = json!({
                "id": a.skill,
                "name": a.name,
                "description": a.description,
                "tags": tags,
                "inputModes": ["text/plain", "application/json"],
                "outputModes": ["application/json", "text/plain"],
            });
            if !a.examples.is_empty() {
                skill["examples"] = json!(a.examples);
            }
            skill
        })
        .collect();
    json!({
        "name": a2a.map_or(crate::config::DEFAULT_A2A_NAME, |a| a.name.as_str()),
        "description": a2a.map_or("", |a| a.description.as_str()),
        "version": env!("CARGO_PKG_VERSION"),
        "supportedInterfaces": [{
            "url": format!("{base}/a2a"),
            "protocolBinding": "JSONRPC",
            "protocolVersion": "1.0",
        }],
        "capabilities": {
            "streaming": true,
            "pushNotifications": true,
            "extendedAgentCard": false,
        },
        "securitySchemes": {
            SCHEME: {
                "httpAuthSecurityScheme": {
                    "scheme": "Bearer",
                    "description": "The peer's A2A token ([peers.NAME] a2a_token_env in routes.toml)",
                }
            }
        },
        "securityRequirements": [{ "schemes": { SCHEME: { "list": [] } } }],
        "defaultInputModes": ["text/plain", "application/json"],
        "defaultOutputModes": ["application/json", "text/plain"],
        "skills": skills,
    })
}
