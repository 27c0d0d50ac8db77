//! The config reader: any text is a configuration or an error, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = kubewire::operations::config::Config::parse("fuzz.toml", text) {
        let message = error.to_string();
        assert!(
            message.contains(": "),
            "an error says where and what: {message}"
        );
    }
});
