//! Cluster objects from YAML or JSON manifest files, and the embedded demo.
//!
//! A file may hold several YAML documents, and a document may be a
//! `kind: List`. The kinds read are Service, EndpointSlice, Pod, Namespace
//! and ServiceImport; any other kind is skipped with a debug log.

use super::from_api::{FromApi, ModelError};
use kubewire_answer::model::{ImportModel, PodModel, ServiceModel, SliceModel};
use kubewire_answer::selector::LabelSelector;
use kubewire_answer::{Kind, Object};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The embedded demo cluster, used only with `--demo`.
pub const DEMO_MANIFEST: &str = include_str!("demo.yaml");

/// Why a manifest could not be used. The message names the file, the line
/// where known, and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The path cannot be read.
    #[error("cannot read {path}: {source}; check that the path exists and is readable")]
    Read {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid YAML or JSON.
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// A document is valid YAML but not a valid object of its kind.
    #[error("{path}:{line}: {kind} {name}: {message}")]
    Object {
        /// The file.
        path: PathBuf,
        /// 1-based line where the document starts.
        line: u64,
        /// Its kind.
        kind: String,
        /// Its namespace/name, if it has one.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// The manifest files under a path: the file itself, or the `.yaml`,
/// `.yml` and `.json` files in a directory (not recursive), sorted.
pub fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let read_error = |source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    if !metadata.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let file = entry.path();
        let hidden = file
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        let wanted = matches!(
            file.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        );
        if wanted && !hidden && file.is_file() {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads and parses one manifest file.
pub fn load_file(path: &Path) -> Result<Vec<Labelled>, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_labelled(path, &text)
}

/// An object and its `metadata.labels`, which the filters of
/// `kubernetes.labels` read.
pub type Labelled = (Object, BTreeMap<String, String>);

/// Parses manifest text. `path` is only used in error messages.
pub fn parse_manifest(path: &Path, text: &str) -> Result<Vec<Object>, ManifestError> {
    Ok(parse_labelled(path, text)?
        .into_iter()
        .map(|(object, _)| object)
        .collect())
}

/// A JSON `List`, its items left as text: `kubectl get -o json` writes
/// one, and a list of 50k pods parsed whole into `Value`s is ten times the
/// file's size in memory at once. Decoded item by item it is one pod's.
#[derive(serde::Deserialize)]
struct JsonList<'a> {
    kind: String,
    #[serde(borrow)]
    items: Vec<&'a serde_json::value::RawValue>,
}

/// Parses manifest text, keeping each object's labels.
pub fn parse_labelled(path: &Path, text: &str) -> Result<Vec<Labelled>, ManifestError> {
    let is_json = path.extension().and_then(|e| e.to_str()) == Some("json");
    if is_json
        && let Ok(list) = serde_json::from_str::<JsonList<'_>>(text)
        && list.kind == "List"
    {
        let mut objects = Vec::new();
        // Each item's first line, for its errors: newlines counted on from
        // the last item's start.
        let (mut line, mut counted) = (1u64, 0usize);
        for item in list.items {
            let start = (item.get().as_ptr() as usize)
                .wrapping_sub(text.as_ptr() as usize)
                .clamp(counted, text.len());
            line += text.as_bytes()[counted..start]
                .iter()
                .filter(|&&b| b == b'\n')
                .count() as u64;
            counted = start;
            // Valid JSON already: the list parsed.
            let item: Value =
                serde_json::from_str(item.get()).map_err(|e| invalid_json(path, line, &e))?;
            read_document(path, line, item, &mut objects)?;
        }
        return Ok(objects);
    }
    let documents: Vec<Value> = if is_json {
        let value: Value =
            serde_json::from_str(text).map_err(|e| invalid_json(path, e.line() as u64, &e))?;
        vec![value]
    } else {
        serde_saphyr::from_multiple_with_options::<Value>(text, yaml_options()).map_err(|e| {
            ManifestError::Syntax {
                path: path.to_path_buf(),
                line: e.location().map(|l| l.line()).unwrap_or(0),
                message: format!("invalid YAML: {}", first_line(&e.to_string())),
            }
        })?
    };
    let starts = document_start_lines(text, is_json);
    let mut objects = Vec::new();
    for (index, document) in documents.into_iter().enumerate() {
        let line = starts.get(index).copied().unwrap_or(0);
        read_document(path, line, document, &mut objects)?;
    }
    Ok(objects)
}

/// A JSON syntax error at `line` of `path`.
fn invalid_json(path: &Path, line: u64, error: &serde_json::Error) -> ManifestError {
    ManifestError::Syntax {
        path: path.to_path_buf(),
        line,
        message: format!("invalid JSON: {error}"),
    }
}

/// The YAML reader's limits. Operators export whole namespaces into one
/// file, so the size limits (documents, events, nodes, scalar bytes, input
/// bytes) are lifted: a manifest that fits in memory loads. The limits kept
/// are the ones that stop expansion bombs, whose output is far larger than
/// their input: aliases, anchors, anchored events and bytes, merge keys and
/// nesting depth, at serde-saphyr's defaults.
fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_reader_input_bytes = None;
    budget.max_documents = usize::MAX;
    budget.max_events = usize::MAX;
    budget.max_nodes = usize::MAX;
    budget.max_total_scalar_bytes = usize::MAX;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

/// 1-based lines where each YAML document starts (after `---` lines).
fn document_start_lines(text: &str, is_json: bool) -> Vec<u64> {
    if is_json {
        return vec![1];
    }
    let mut starts = Vec::new();
    let mut pending = true;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed == "---" || trimmed.starts_with("--- ") {
            pending = true;
            continue;
        }
        if pending && !trimmed.is_empty() && !trimmed.starts_with('#') {
            starts.push(i as u64 + 1);
            pending = false;
        }
    }
    starts
}

fn read_document(
    path: &Path,
    line: u64,
    document: Value,
    out: &mut Vec<Labelled>,
) -> Result<(), ManifestError> {
    if document.is_null() {
        return Ok(());
    }
    let kind = document
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let name = object_name(&document);
    let error = |message: String| ManifestError::Object {
        path: path.to_path_buf(),
        line,
        kind: if kind.is_empty() {
            "document".into()
        } else {
            kind.clone()
        },
        name: name.clone(),
        message,
    };
    if kind == "List" {
        // Taken out of the document, not copied: a list of 50k pods is
        // most of a file's parsed size, and a copy would double it.
        let items = match document {
            Value::Object(mut fields) => fields.remove("items"),
            _ => None,
        };
        if let Some(Value::Array(items)) = items {
            for item in items {
                read_document(path, line, item, out)?;
            }
        }
        return Ok(());
    }
    let labels: BTreeMap<String, String> = document
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let mut push = |object: Object| out.push((object, labels.clone()));
    match kind.as_str() {
        "Service" => push(
            decode(document, &kind, |s| {
                ServiceModel::from_api(s).map(Object::Service)
            })
            .map_err(error)?,
        ),
        "EndpointSlice" => push(
            decode(document, &kind, |s| {
                SliceModel::from_api(s).map(Object::Slice)
            })
            .map_err(error)?,
        ),
        "Pod" => push(
            decode(document, &kind, |p: &super::from_api::LeanPod| {
                PodModel::from_api(p).map(Object::Pod)
            })
            .map_err(error)?,
        ),
        "Namespace" => push(
            decode(document, &kind, |n| {
                String::from_api(n).map(Object::Namespace)
            })
            .map_err(error)?,
        ),
        "ServiceImport" => push(
            decode(document, &kind, |i: &kube::api::DynamicObject| {
                ImportModel::from_api(i).map(Object::Import)
            })
            .map_err(error)?,
        ),
        "" => return Err(error("document has no `kind`".into())),
        other => {
            tracing::debug!(file = %path.display(), line, kind = other, name = %name, "skipping a kind kubewire does not read");
        }
    }
    Ok(())
}

/// Reads a document as the API type `T` and keeps what DNS needs of it.
fn decode<T: serde::de::DeserializeOwned>(
    document: Value,
    kind: &str,
    convert: impl FnOnce(&T) -> Result<Object, ModelError>,
) -> Result<Object, String> {
    let object: T =
        serde_json::from_value(document).map_err(|e| format!("not a valid {kind}: {e}"))?;
    convert(&object).map_err(|e| e.to_string())
}

fn object_name(document: &Value) -> String {
    let meta = document.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>");
    match meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
    {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.to_string(),
    }
}

/// `kubernetes.namespaces` and `kubernetes.labels` for manifests, as the
/// cluster source asks the API server for them: namespaces filter every
/// kind, the label selector Services and EndpointSlices.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    namespaces: Option<std::collections::HashSet<String>>,
    labels: Option<LabelSelector>,
}

impl Filter {
    /// From the `[kubernetes]` settings; a selector that does not parse is
    /// an error that says what a selector may hold.
    pub fn new(namespaces: &[String], labels: &str) -> Result<Filter, String> {
        let labels = if labels.trim().is_empty() {
            None
        } else {
            Some(LabelSelector::parse(labels).map_err(|e| format!("kubernetes.labels: {e}"))?)
        };
        Ok(Filter {
            namespaces: (!namespaces.is_empty()).then(|| namespaces.iter().cloned().collect()),
            labels,
        })
    }

    fn admits(&self, object: &Object, labels: &BTreeMap<String, String>) -> bool {
        if !super::watch::served(object, self.namespaces.as_ref()) {
            return false;
        }
        match (&self.labels, object) {
            (Some(selector), Object::Service(_) | Object::Slice(_)) => selector.matches(labels),
            _ => true,
        }
    }
}

/// The objects of a set of files, kept per file so that a file that breaks
/// keeps its last good objects while the others move on.
#[derive(Debug, Default)]
pub struct ManifestSet {
    files: BTreeMap<PathBuf, Vec<Labelled>>,
}

impl ManifestSet {
    /// Re-reads every manifest under `root`. Files that fail keep their last
    /// good objects; their errors are returned for logging. A file that is
    /// gone is dropped. Fails only if `root` itself cannot be read.
    pub fn reload(&mut self, root: &Path) -> Result<Vec<ManifestError>, ManifestError> {
        let files = manifest_files(root)?;
        self.files.retain(|path, _| files.contains(path));
        let mut errors = Vec::new();
        for file in files {
            match load_file(&file) {
                Ok(objects) => {
                    self.files.insert(file, objects);
                }
                Err(error) => errors.push(error),
            }
        }
        Ok(errors)
    }

    /// Whether an object of `kind` and `key` is in the files but `filter`
    /// leaves it out (for `explain`).
    pub fn filtered_out(
        &self,
        filter: &Filter,
        kind: Kind,
        key: &kubewire_answer::ObjectKey,
    ) -> bool {
        self.files.values().flatten().any(|(object, labels)| {
            object.kind() == kind
                && object.key_parts() == (&*key.namespace, key.name.as_str())
                && !filter.admits(object, labels)
        })
    }

    /// The objects `filter` admits, grouped by kind, for one relist per
    /// kind.
    pub fn by_kind(&self, filter: &Filter) -> Vec<(Kind, Vec<Object>)> {
        let mut groups: Vec<(Kind, Vec<Object>)> = [
            Kind::Namespace,
            Kind::Service,
            Kind::Slice,
            Kind::Pod,
            Kind::Import,
        ]
        .into_iter()
        .map(|k| (k, Vec::new()))
        .collect();
        let admitted = self
            .files
            .values()
            .flatten()
            .filter(|(object, labels)| filter.admits(object, labels))
            .map(|(object, _)| object);
        for object in admitted {
            if let Some((_, list)) = groups.iter_mut().find(|(k, _)| *k == object.kind()) {
                list.push(object.clone());
            }
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_parses() {
        let objects = parse_manifest(Path::new("demo.yaml"), DEMO_MANIFEST).unwrap();
        assert!(objects.iter().any(|o| o.key().name == "kube-dns"));
        assert!(objects.iter().any(|o| matches!(o, Object::Slice(_))));
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: a\nspec:\n  clusterIP: 10.0.0.999\n";
        let error = parse_manifest(Path::new("x.yaml"), text).unwrap_err();
        assert_eq!(
            error.to_string(),
            "x.yaml:6: Service a/web: a/web: spec.clusterIPs \"10.0.0.999\" is not an IP address"
        );

        let error = parse_manifest(Path::new("y.yaml"), "kind: Service\nmetadata: [unclosed\n")
            .unwrap_err();
        assert!(
            matches!(error, ManifestError::Syntax { line: 2.., .. }),
            "{error}"
        );

        let error =
            parse_manifest(Path::new("z.json"), "{\"kind\": \"Service\",\n  oops}").unwrap_err();
        assert!(
            error.to_string().starts_with("z.json:2: invalid JSON"),
            "{error}"
        );
    }

    #[test]
    fn lists_and_unknown_kinds() {
        let text = "kind: List\nitems:\n- kind: Namespace\n  metadata: {name: a}\n- kind: ConfigMap\n  metadata: {name: c, namespace: a}\n";
        let objects = parse_manifest(Path::new("l.yaml"), text).unwrap();
        assert_eq!(objects, vec![Object::Namespace("a".into())]);
    }

    #[test]
    fn a_json_list_is_read_item_by_item_and_errors_name_the_items_line() {
        let text = r#"{
  "apiVersion": "v1",
  "items": [
    {"kind": "Namespace", "metadata": {"name": "a"}},
    {"kind": "ConfigMap", "metadata": {"name": "c", "namespace": "a"}},
    {"kind": "Namespace", "metadata": {"name": "b"}}
  ],
  "kind": "List"
}
"#;
        let objects = parse_manifest(Path::new("l.json"), text).unwrap();
        assert_eq!(
            objects,
            vec![Object::Namespace("a".into()), Object::Namespace("b".into())]
        );
        let broken = text.replace(
            r#"{"kind": "Namespace", "metadata": {"name": "b"}}"#,
            r#"{"kind": "Service", "metadata": {"name": "s", "namespace": "a"}, "spec": {"ports": "x"}}"#,
        );
        let error = parse_manifest(Path::new("l.json"), &broken).unwrap_err();
        let text = error.to_string();
        assert!(text.starts_with("l.json:6:"), "{text}");
        assert!(text.contains("a/s"), "{text}");
    }

    #[test]
    fn thousands_of_documents_load() {
        // An exported namespace: 3000 Services, one document each. The YAML
        // reader's default budget stopped at 1024 documents.
        let mut text = String::from("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: big\n");
        for i in 0..3000u32 {
            text.push_str(&format!(
                "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\n  namespace: big\n  labels:\n    app: svc-{i}\nspec:\n  clusterIP: 10.{}.{}.{}\n  ports:\n  - name: http\n    port: 80\n    protocol: TCP\n",
                i / 65536 + 96,
                (i / 256) % 256,
                i % 256
            ));
        }
        let objects = parse_manifest(Path::new("big.yaml"), &text).unwrap();
        assert_eq!(objects.len(), 3001);
        assert!(objects.iter().any(|o| o.key().name == "svc-2999"));
    }

    #[test]
    fn an_alias_bomb_is_still_refused() {
        // Each level doubles the one before: the expansion limits stay.
        let mut text = String::from(
            "kind: ConfigMap\nmetadata: {name: x}\nl0: &l0 [a, a, a, a, a, a, a, a]\n",
        );
        for level in 1..40 {
            let previous = level - 1;
            text.push_str(&format!(
                "l{level}: &l{level} [*l{previous}, *l{previous}, *l{previous}, *l{previous}]\n"
            ));
        }
        let error = parse_manifest(Path::new("bomb.yaml"), &text).unwrap_err();
        assert!(error.to_string().contains("invalid YAML"), "{error}");
    }
}
