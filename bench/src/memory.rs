//! `sync`'s table of where a node's memory goes, from kubewire's own
//! accounting: the `memory` line it logs once ready.

/// The value of `key=` in a log line: a number, or a list of numbers.
fn field(line: &str, key: &str) -> Option<Vec<u64>> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    if let Some(list) = rest.strip_prefix('[') {
        let list = &list[..list.find(']')?];
        return list
            .split(',')
            .filter(|n| !n.trim().is_empty())
            .map(|n| n.trim().parse().ok())
            .collect();
    }
    let end = rest.find(' ').unwrap_or(rest.len());
    rest[..end].parse().ok().map(|n| vec![n])
}

/// The number `key=` gives, if the line has it (builds before a part was
/// accounted for do not log it).
fn optional(line: &str, key: &str) -> Option<u64> {
    field(line, key).and_then(|values| values.first().copied())
}

fn one(line: &str, key: &str) -> Result<u64, String> {
    optional(line, key).ok_or_else(|| format!("kubewire's memory line has no {key}: {line}"))
}

/// Prints the table for a node holding `objects` Services, endpoints and
/// pods, from kubewire's `memory` log line.
pub(crate) fn print_table(line: &str, objects: usize) -> Result<(), String> {
    let names = one(line, "names")?.max(1);
    let objects = objects.max(1) as u64;
    let cores = field(line, "core_own_bytes").unwrap_or_default();
    let core_bytes = cores.iter().max().copied().unwrap_or(0);
    let parts = [
        (
            "compiled entries (shared by the compiler and every core)",
            one(line, "entry_bytes")?,
        ),
        (
            "the compiler's own names (its changes since the index)",
            one(line, "compiler_table_bytes")?,
        ),
        (
            "the index of every name, shared by the cores",
            one(line, "shared_index_bytes")?,
        ),
        (
            "compile units (their names, record hashes, PTR sources)",
            one(line, "unit_bytes")?,
        ),
        (
            "model tables (slots, and the port lists and namespaces the models share)",
            one(line, "model_table_bytes")?,
        ),
        (
            "the models (Services, slices, imports; their strings and vectors) and slices by Service",
            optional(line, "model_bytes").unwrap_or(0),
        ),
    ];
    let in_use = one(line, "heap_in_use_bytes")?;
    let itemized: u64 =
        parts.iter().map(|(_, bytes)| bytes).sum::<u64>() + core_bytes * cores.len() as u64;
    println!(
        "memory by part, from kubewire's own accounting ({names} names, {objects} Services, endpoints and pods, {} cores):",
        cores.len()
    );
    println!("| part | bytes | per name | per object |");
    println!("| --- | --- | --- | --- |");
    let row = |part: &str, bytes: u64| {
        println!(
            "| {part} | {bytes} | {:.1} | {:.1} |",
            bytes as f64 / names as f64,
            bytes as f64 / objects as f64
        );
    };
    for (i, (part, bytes)) in parts.into_iter().enumerate() {
        row(part, bytes);
        // The entries come first: what the wire answers need, beside what
        // serves them.
        if i == 0
            && let (Some(keys), Some(headers), Some(records)) = (
                optional(line, "entry_key_bytes"),
                optional(line, "entry_answer_header_bytes"),
                optional(line, "entry_record_bytes"),
            )
        {
            row("… of which the names (keys)", keys);
            row("… of which the answers' records", records);
            row("… of which each answer's type and flat header", headers);
            row(
                "… of which each block's header (reference count, entry header, length)",
                bytes.saturating_sub(keys + headers + records),
            );
        }
    }
    row(
        "each core's own (name changes since the index; the most of any core)",
        core_bytes,
    );
    row(
        "the rest of the heap (the allocator's headers and rounding, watch state, runtimes, buffers)",
        in_use.saturating_sub(itemized),
    );
    row("heap in use (glibc's count)", in_use);
    row("heap held free by glibc", one(line, "heap_free_bytes")?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_as_numbers_and_lists() {
        let line = "2026-12-07T16:00:00Z  INFO kubewire::sources::control_plane: memory names=12 entry_bytes=300 core_own_bytes=[0, 64] heap_in_use_bytes=9000";
        assert_eq!(field(line, "names"), Some(vec![12]));
        assert_eq!(field(line, "core_own_bytes"), Some(vec![0, 64]));
        assert_eq!(field(line, "heap_in_use_bytes"), Some(vec![9000]));
        assert_eq!(field(line, "bytes"), None);
        assert!(one(line, "unit_bytes").is_err());
    }
}
