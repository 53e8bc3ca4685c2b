//! Templates: commands, paths and values rendered against a node's cached args.
//!
//! Jinja syntax (minijinja) with strict undefined: a variable that is not cached is a clear
//! failure of that job, never an empty string. Python-style methods that Directord's own
//! orchestrations use (`query.values()`, `items()`, `keys()`) work too.

use std::{
    collections::HashMap,
    ops::Deref,
    sync::{Arc, Mutex, OnceLock},
};

use minijinja::{
    Environment, UndefinedBehavior,
    syntax::SyntaxConfig,
    value::{Enumerator, Object},
};
use serde_json::{Map, Value};

/// The variables templates render with: the node's args as JSON, and the engine's own copy of
/// each arg, made at its first use and kept until that arg changes. Converting an arg costs as
/// much as its size (megabytes after a QUERY of large outputs): a template pays for the args it
/// names, once per change of them, not for all of them at every render. Cheap to clone
/// (shared).
#[derive(Debug, Default, Clone)]
pub struct Vars {
    json: Arc<Map<String, Value>>,
    engine: Arc<Mutex<HashMap<String, minijinja::Value>>>,
}

impl Vars {
    /// The args to change: copied first if another holder still reads them; the engine's
    /// copies go (made again at their next use).
    pub fn map_mut(&mut self) -> &mut Map<String, Value> {
        self.engine = Arc::default();
        Arc::make_mut(&mut self.json)
    }

    /// The args to change, of which only `names` (top-level) will: the engine's copies of
    /// the others are kept.
    pub fn map_mut_names(&mut self, names: &[String]) -> &mut Map<String, Value> {
        let kept: HashMap<String, minijinja::Value> = self
            .engine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(k, _)| !names.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // A new map, not the shared one: a job holding the args as they were renders with
        // their old values.
        self.engine = Arc::new(Mutex::new(kept));
        Arc::make_mut(&mut self.json)
    }

    /// Whether `other` is these very args (shared), not a copy.
    pub fn same_as(&self, other: &Vars) -> bool {
        Arc::ptr_eq(&self.json, &other.json)
    }

    /// The arg `name` as the engine sees it.
    fn engine_value(&self, name: &str) -> Option<minijinja::Value> {
        // A panic while converting leaves at worst a missing entry: the map stays usable.
        let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = engine.get(name) {
            return Some(v.clone());
        }
        let v = minijinja::Value::from(minijinja::value::Serde(self.json.get(name)?));
        engine.insert(name.to_string(), v.clone());
        Some(v)
    }
}

impl From<Map<String, Value>> for Vars {
    fn from(json: Map<String, Value>) -> Vars {
        Vars {
            json: Arc::new(json),
            engine: Arc::default(),
        }
    }
}

/// A JSON object's names and values; anything else has none.
impl From<Value> for Vars {
    fn from(json: Value) -> Vars {
        match json {
            Value::Object(map) => Vars::from(map),
            _ => Vars::default(),
        }
    }
}

impl Deref for Vars {
    type Target = Map<String, Value>;
    fn deref(&self) -> &Map<String, Value> {
        &self.json
    }
}

/// What a render sees at the top: the args by name, each converted at its first use.
#[derive(Debug)]
struct Root(Vars);

impl Object for Root {
    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        self.0.engine_value(key.as_str()?)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(
            self.0
                .json
                .keys()
                .map(|k| minijinja::Value::from(k.as_str()))
                .collect(),
        )
    }
}

/// The most work one render does, in the engine's fuel: a step (an instruction) costs one, and
/// each 64 bytes the render makes (strings, lists, output; `tojson` 16 times more) one more.
/// Above what large templates over ten thousand hosts take (a `tojson` of their 4 KiB values
/// 11 million, a loop building a string over them 17.5 million), and at most seconds of work;
/// a template that loops or grows a string without end fails its job instead of stalling the
/// node's jobs, once it has made some 1.3 GB in all (a string doubled in a loop).
pub const RENDER_FUEL: u64 = 20_000_000;

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Values go in as they are, whatever the file's extension, as in Directord's Jinja:
        // the engine would otherwise quote them in a `.yaml` or `.json` blueprint and
        // escape them in a `.html` one.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        // A render runs on the jobs' thread, where no timeout can stop it: a loop written too
        // long fails its job instead of stalling every job of the node.
        env.set_fuel(Some(RENDER_FUEL));
        if let Ok(syntax) = SyntaxConfig::builder().keep_trailing_newline(true).build() {
            env.set_syntax(syntax);
        }
        env
    })
}

/// Whether `text` contains template syntax at all (plain text skips the engine).
pub fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// Renders `text` with `args` (a JSON object) as its variables.
pub fn render(text: &str, args: &Vars) -> Result<String, String> {
    render_named("<string>", text, args)
}

/// Like [`render`], for the text of a file: errors give their place as `NAME:LINE`.
pub fn render_named(name: &str, text: &str, args: &Vars) -> Result<String, String> {
    if !is_template(text) {
        return Ok(text.to_string());
    }
    environment()
        .render_named_str(
            name,
            text,
            minijinja::Value::from_object(Root(args.clone())),
        )
        .map_err(|e| {
            let mut msg = format!("template error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            if e.kind() == minijinja::ErrorKind::OutOfFuel {
                msg.push_str(&format!(
                    " (it took more than the {} million steps a render may: a loop too long, or a value \
                     grown too large?)",
                    RENDER_FUEL / 1_000_000
                ));
            }
            if e.kind() == minijinja::ErrorKind::UndefinedError {
                let missing = missing_args(text, args);
                if !missing.is_empty() {
                    msg.push_str(&format!(
                        "; the node's args have no {}",
                        missing
                            .iter()
                            .map(|m| format!("'{m}'"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            msg
        })
}

/// The top-level names `text` reads (those the engine defines left out), or `None` when it is
/// no template that parses.
pub fn names_used(text: &str) -> Option<std::collections::BTreeSet<String>> {
    let env = environment();
    let template = env.template_from_str(text).ok()?;
    Some(
        template
            .undeclared_variables(false)
            .into_iter()
            .filter(|name| !env.globals().any(|(g, _)| g == name))
            .collect(),
    )
}

/// Whether `text` calls something that sees every variable at once (`debug()` prints the
/// whole context), so that its output depends on every arg, not only the names it reads.
pub fn reads_every_arg(text: &str) -> bool {
    let env = environment();
    env.template_from_str(text)
        .is_ok_and(|t| t.undeclared_variables(false).contains("debug"))
}

/// The top-level names `text` uses that neither `args` nor the engine defines, sorted.
fn missing_args(text: &str, args: &Map<String, Value>) -> Vec<String> {
    let env = environment();
    let Ok(template) = env.template_from_str(text) else {
        return Vec::new();
    };
    let mut missing: Vec<String> = template
        .undeclared_variables(false)
        .into_iter()
        .filter(|name| args.get(name).is_none() && !env.globals().any(|(g, _)| g == name))
        .collect();
    missing.sort();
    missing
}

/// Whether `text` parses as a template: a syntax error would fail on every node, so it is bad
/// input, refused where the job is written.
pub fn check_syntax(text: &str) -> Result<(), String> {
    if !is_template(text) {
        return Ok(());
    }
    environment()
        .template_from_str(text)
        .map(|_| ())
        .map_err(|e| format!("template syntax error: {e}"))
}

/// Renders every string inside `value` (lists and maps recursively).
pub fn render_value(value: &Value, args: &Vars) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) => Value::String(render(s, args)?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_value(v, args))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_value(v, args)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn renders_against_args() {
        let args = Vars::from(
            json!({"name": "web", "port": 8080, "query": {"n1": {"x": 1}, "n2": {"x": 2}}}),
        );
        assert_eq!(
            render("echo {{ name }}:{{ port }}", &args).unwrap(),
            "echo web:8080"
        );
        assert_eq!(render("plain $HOME {x}", &args).unwrap(), "plain $HOME {x}");
        assert_eq!(render("a\n", &args).unwrap(), "a\n");
        assert_eq!(render("{{ name }}\n", &args).unwrap(), "web\n");
        // Directord's own orchestrations use Python dict methods.
        assert_eq!(
            render(
                "{{ query.values() | map(attribute='x') | select('defined') | list | first }}",
                &args
            )
            .unwrap(),
            "1"
        );
    }

    /// A blueprint renders values as they are whatever its extension (no quoting in YAML or
    /// JSON files, no HTML escaping).
    #[test]
    fn blueprints_render_values_as_they_are() {
        let args = Vars::from(json!({"s": "v<a>", "n": 3}));
        for name in [
            "app.yaml",
            "app.yml",
            "app.json",
            "index.html",
            "a.xml",
            "app.conf",
        ] {
            assert_eq!(
                render_named(name, "k: {{ s }} {{ n }}\n", &args).unwrap(),
                "k: v<a> 3\n",
                "{name}"
            );
        }
        // `tojson` still writes JSON where one wants it (HTML-safe, as Jinja's).
        assert_eq!(
            render_named("app.yaml", "k: {{ n | tojson }} {{ s | tojson }}", &args).unwrap(),
            r#"k: 3 "v\u003ca\u003e""#
        );
    }

    #[test]
    fn a_files_errors_name_the_file() {
        let e = render_named("app.conf", "a\nb {{ nope }}\n", &Vars::from(json!({}))).unwrap_err();
        assert!(e.contains("app.conf:2"), "{e}");
    }

    /// `tojson`, as Directord's Jinja has it: a value written out as JSON (QUERY's set, say).
    #[test]
    fn tojson_writes_json() {
        let args = Vars::from(json!({"query": {"n1": {"ip": "10.0.0.1"}}}));
        assert_eq!(
            render("{{ query | tojson }}", &args).unwrap(),
            r#"{"n1": {"ip": "10.0.0.1"}}"#
        );
    }

    #[test]
    fn a_missing_variable_is_an_error() {
        let e = render("echo {{ nope }}", &Vars::from(json!({}))).unwrap_err();
        assert!(e.contains("undefined"), "{e}");
        // It names what is missing, not what is there or what the engine provides.
        let e = render(
            "{{ here }} {{ nope }} {% for i in range(2) %}{{ also.x }}{% endfor %}",
            &Vars::from(json!({"here": 1})),
        )
        .unwrap_err();
        assert!(e.ends_with("the node's args have no 'also', 'nope'"), "{e}");
        assert!(
            render("{{ unclosed", &Vars::from(json!({})))
                .unwrap_err()
                .contains("template error")
        );
    }

    #[test]
    fn syntax_errors_are_found_without_rendering() {
        assert!(check_syntax("echo {{ x }} plain").is_ok());
        assert!(check_syntax("awk '{print $1}'").is_ok());
        let e = check_syntax("echo {{ unclosed").unwrap_err();
        assert!(e.starts_with("template syntax error"), "{e}");
    }

    /// A template pays for the args it names: the others are not converted for the engine,
    /// and those it names are converted once until they change.
    #[test]
    fn only_the_args_named_are_converted() {
        let mut args = Vars::from(json!({"x": 1, "big": "b".repeat(1 << 20)}));
        let converted = |v: &Vars| {
            let mut names: Vec<String> = v.engine.lock().unwrap().keys().cloned().collect();
            names.sort();
            names
        };
        assert_eq!(render("{{ x }}", &args).unwrap(), "1");
        assert_eq!(converted(&args), vec!["x"]);
        // A clone (another job's view) shares the copies.
        assert_eq!(render("{{ x + 1 }}", &args.clone()).unwrap(), "2");
        assert_eq!(converted(&args), vec!["x"]);
        assert_eq!(render("{{ big | length }}", &args).unwrap(), "1048576");
        let before = args.clone();
        args.map_mut_names(&["x".into()])
            .insert("x".into(), json!(4));
        assert_eq!(
            converted(&args),
            vec!["big"],
            "a change of x keeps big's copy"
        );
        assert_eq!(render("{{ x }}", &args).unwrap(), "4");
        assert_eq!(
            render("{{ x }}", &before).unwrap(),
            "1",
            "the old args keep theirs"
        );
        args.map_mut().insert("x".into(), json!(5));
        assert!(
            converted(&args).is_empty(),
            "a change of any arg drops the copies"
        );
        assert_eq!(
            render("{{ x }} {{ big | length }}", &args).unwrap(),
            "5 1048576"
        );
        assert_eq!(converted(&args), vec!["big", "x"]);
        // An arg that is not there is still undefined to the engine's tests and filters.
        assert_eq!(render("{{ nope | default('d') }}", &args).unwrap(), "d");
    }

    #[test]
    fn values_render_recursively() {
        let args = Vars::from(json!({"a": "A"}));
        assert_eq!(
            render_value(
                &json!({"k": ["{{ a }}", 1, {"x": "{{ a }}{{ a }}"}]}),
                &args
            )
            .unwrap(),
            json!({"k": ["A", 1, {"x": "AA"}]})
        );
    }

    /// A render that would loop for minutes fails at once, saying why; a loop over thousands
    /// of items renders.
    #[test]
    fn a_render_too_long_fails_instead_of_stalling() {
        let args = Vars::from(json!({}));
        let e = render(
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            &args,
        )
        .unwrap_err();
        assert!(e.contains("a loop too long"), "{e}");
        let out = render("{% for i in range(20000) %}{{ i }} {% endfor %}", &args).unwrap();
        assert_eq!(out.split_whitespace().count(), 20000);
    }

    /// A render that would build a string or a list of gigabytes at once fails before it
    /// holds them (the engine checks what it is about to allocate against its fuel).
    #[test]
    fn a_render_that_would_fill_the_memory_fails() {
        let args = Vars::from(json!({}));
        for text in [
            "{{ ('a' * 4000000000)|length }}",
            "{{ (['a'] * 4000000000)|length }}",
        ] {
            let e = render(text, &args).unwrap_err();
            assert!(e.contains("template error"), "{text}: {e}");
        }
    }
}
