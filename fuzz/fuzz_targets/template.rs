//! `bench --call`'s request templates: parsed or refused with a message;
//! a parsed one renders, in bounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unreachable_pub)]
#[path = "../../services/echo-cli/src/bench/template.rs"]
mod template;

use template::{RequestContext, Template};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(template) = Template::parse(text) {
        let context = RequestContext {
            request: 7,
            worker: 1,
            connection: 0,
        };
        let _ = template.render(context);
    }
});
