module Research.Tests.ConfigTests

open System
open System.IO
open Expecto
open Research.Core.Config
open Research.Core.Plugins
open Research.Tests.TestSupport

/// The error lines of a config that must fail.
let errorsOf (text: string) (overrides: string list) =
    try
        ConfigLoader.Parse(text, "bad.toml", overrides) |> ignore
        failtest "the config was accepted"
    with :? ConfigException as e -> e.Errors |> Seq.map string |> List.ofSeq

/// An enum as an options type might declare it.
type private Anchor =
    | Initial = 0
    | PreviousTask = 1

let tests =
    testList "config" [
        test "an array of inline tables, in the file or as an override, means the same as [[regularizers]] tables, indexed alike; [] means none" {
            let tables = ConfigLoader.Parse("[[regularizers]]\nname = \"ewc\"\nlambda = 3.0\n", "tables.toml")
            let inlineTables = ConfigLoader.Parse("regularizers = [{ name = \"ewc\", lambda = 3.0 }]\n", "inline.toml")
            let overridden = ConfigLoader.Parse("[[regularizers]]\nname = \"l2\"\n", "o.toml", [ "regularizers=[{ name = \"ewc\", lambda = 1.0 }]"; "regularizers.0.lambda=3.0" ])
            for c in [ tables; inlineTables; overridden ] do
                Expect.equal [ for r in c.Methods -> r.Name, r.Options["lambda"] ] [ "ewc", box 3.0 ] c.File
            Expect.isEmpty (ConfigLoader.Parse("[[regularizers]]\nname = \"l2\"\n", "o.toml", [ "regularizers=[]" ])).Methods "cleared"
        }
        test "optimizer.components as an array of inline tables (what a --set or a sweep writes) binds as [[optimizer.components]] tables" {
            let tables = ConfigLoader.Parse("[[optimizer.components]]\nname = \"body\"\nmatch = \"^body\\\\.\"\nlr = 0.5\n[[optimizer.components]]\nname = \"head\"\nmatch = \"^head\\\\.\"\nfrozen = true\n", "tables.toml")
            let overridden = ConfigLoader.Parse("", "o.toml", [ "optimizer.components=[{ name = \"body\", match = \"^body\\\\.\", lr = 0.5 }, { name = \"head\", match = \"^head\\\\.\", frozen = true }]" ])
            for c in [ tables; overridden ] do
                Expect.equal [ for x in c.Optimizer.Components -> x.Name, x.Match, x.Lr, x.Frozen ] [ "body", "^body\\.", 0.5, false; "head", "^head\\.", 0.0, true ] c.File
            let errs = errorsOf "" [ "optimizer.components=[{ name = \"body\", lr = 0.5 }]" ]
            Expect.isTrue (errs |> List.exists (fun e -> e.Contains "optimizer.components[0].match")) (sprintf "an inline table's missing key is named by its index: %A" errs)
        }
        test "nan and ±inf are refused for every float option, of a section and of a plugin, naming the key and the file" {
            for text, key in [ "[optimizer]\nlr = nan\n", "optimizer.lr"; "[optimizer]\nclip_norm = inf\n", "optimizer.clip_norm"
                               "[data]\nvalidation_fraction = -inf\n", "data.validation_fraction" ] do
                let errs = errorsOf text []
                Expect.isTrue (errs |> List.exists (fun e -> e.Contains(sprintf "bad.toml: %s" key) && e.Contains "not a finite number")) (sprintf "%s: %A" key errs)
            let config = ConfigLoader.Parse("[[methods]]\nname = \"ewc\"\nlambda = nan\n", "bad.toml")
            try
                Research.Core.Plugins.PluginHost.Load([]).Create<obj>(Research.Core.Plugins.PluginRole.Method, config.Methods[0], config.File) |> ignore
                failtest "a nan plugin option was accepted"
            with :? ConfigException as e ->
                Expect.stringContains (string e.Errors[0]) "bad.toml: methods[0].lambda" "names the plugin's key"
                Expect.stringContains (string e.Errors[0]) "not a finite number" "and why"
        }
        test "a duplicate key or table is refused (TOML forbids it), naming the key and the file" {
            for text, key in [ "[optimizer]\nlr = 0.1\nlr = 0.2\n", "optimizer.lr"
                               "[optimizer]\nlr = 0.1\n[optimizer]\nname = \"sgd\"\n", "optimizer"
                               "[optimizer]\nlr = 0.1\n[train]\nepochs = 2\n[optimizer]\nlr = 0.2\n", "optimizer"
                               "[[methods]]\nname = \"ewc\"\nlambda = 1.0\nlambda = 2.0\n", "methods[0].lambda" ] do
                let errs = errorsOf text []
                Expect.isTrue (errs |> List.exists (fun e -> e.StartsWith(sprintf "bad.toml: %s: is defined twice" key))) (sprintf "%s: %A" key errs)
            let twoTables = ConfigLoader.Parse("[[methods]]\nname = \"ewc\"\nlambda = 1.0\n[[methods]]\nname = \"l2\"\nlambda = 2.0\n", "ok.toml")
            Expect.equal twoTables.Methods.Count 2 "the same key in two elements of an array of tables is no duplicate"
        }
        test "a 255-character run name and 2³¹ − 1 epochs are refused, naming the key and the limit" {
            let errs = errorsOf (sprintf "[run]\nname = \"%s\"\n[train]\nepochs = 2147483647\n" (String.replicate 255 "n")) []
            Expect.isTrue (errs |> List.exists (fun e -> e.Contains "bad.toml: run.name" && e.Contains "255 characters long; at most 100")) (sprintf "%A" errs)
            Expect.isTrue (errs |> List.exists (fun e -> e.Contains "bad.toml: train.epochs" && e.Contains "[0, 1000000]")) (sprintf "%A" errs)
        }
        test "[[regularizers]] (contract 1) is read as [[methods]], in the file and in overrides; both in one file is refused naming the key" {
            let older = ConfigLoader.Parse("[[regularizers]]\nname = \"ewc\"\nlambda = 3.0\n", "old.toml", [ "methods.0.lambda=5.0" ])
            Expect.equal [ for m in older.Methods -> m.Name, m.Options["lambda"] ] [ "ewc", box 5.0 ] "an override of methods reaches the older tables"
            let newer = ConfigLoader.Parse("[[methods]]\nname = \"ewc\"\nlambda = 3.0\n", "new.toml", [ "regularizers.0.lambda=7.0" ])
            Expect.equal [ for m in newer.Methods -> m.Name, m.Options["lambda"] ] [ "ewc", box 7.0 ] "an override by the older name reaches [[methods]]"
            try
                ConfigLoader.Parse("[[methods]]\nname = \"l2\"\n[[regularizers]]\nname = \"ewc\"\n", "both.toml") |> ignore
                failtest "both names were accepted"
            with :? ConfigException as e -> Expect.stringContains (string e.Errors[0]) "both.toml: regularizers" "names the file and the key"
        }
        test "an unknown key fails naming the key, the file and the keys that exist" {
            let errs = errorsOf "[optimizer]\nlrr = 0.1\n" []
            Expect.equal errs.Length 1 "one error"
            Expect.stringContains errs.Head "bad.toml: optimizer.lrr: unknown key" "file and key path"
            Expect.stringContains errs.Head "lr, " "lists the known keys"
        }
        test "a selection metric the evaluations do not record (best_metric, early_stopping_metric) is refused before training, naming the metrics there are" {
            let errs = errorsOf "[checkpoint]\nbest_metric = \"val_bogus\"\n[train]\nearly_stopping_metric = \"val_acc\"\n" []
            Expect.equal errs.Length 2 "both reported"
            let all = String.concat "\n" errs
            Expect.stringContains all "bad.toml: checkpoint.best_metric: \"val_bogus\" must be a validation metric (val_loss, val_accuracy)" "best_metric"
            Expect.stringContains all "bad.toml: train.early_stopping_metric: \"val_acc\" must be one of \"val_loss\", \"val_accuracy\"" "early_stopping_metric"
            Expect.stringContains (errorsOf "[checkpoint]\nbest_metric = \"test_accuracy\"\n" []).Head "selecting on test data leaks it" "test data named as the reason"
        }
        test "[[metrics]] tables are read like [[regularizers]]; none means the standard seven; a metric chosen twice is refused" {
            let chosen = ConfigLoader.Parse("[[metrics]]\nname = \"bwt\"\n", "m.toml", [ "metrics=[{ name = \"bwt\" }, { name = \"fwt\" }]" ])
            Expect.equal [ for m in chosen.ChosenMetrics -> m.Name ] [ "bwt"; "fwt" ] "chosen, the override replacing the file's"
            Expect.equal [ for m in (ConfigLoader.Parse("", "d.toml")).Metrics -> m.Name ] (List.ofSeq RunConfig.DefaultMetrics) "the default set"
            let twice = ConfigLoader.Parse("[[metrics]]\nname = \"bwt\"\n[[metrics]]\nname = \"bwt\"\n", "t.toml")
            try
                Research.Core.Training.RunBuilder.Metrics(twice, PluginHost.Load([])) |> ignore
                failtest "bwt chosen twice was accepted"
            with :? ConfigException as e -> Expect.stringContains (string e.Errors[0]) "t.toml: metrics[1].name: \"bwt\" is chosen twice" "names the file and the key"
        }
        test "an unknown section fails naming it" {
            let errs = errorsOf "[optimiser]\nlr = 0.1\n" []
            Expect.stringContains errs.Head "bad.toml: optimiser: unknown section" "section named"
        }
        test "a value of the wrong type names the key, the value and the expected type" {
            let errs = errorsOf "[optimizer]\nlr = \"fast\"\n" []
            Expect.stringContains errs.Head "optimizer.lr: \"fast\" is not a number" "type error"
        }
        test "an invalid value names the key and the rule it breaks; all errors are reported at once" {
            let errs = errorsOf "[optimizer]\nlr = -1.0\n[data]\nvalidation_fraction = 1.5\n" []
            Expect.equal errs.Length 2 "two errors"
            Expect.exists errs (fun e -> e.Contains "optimizer.lr: -1.0 must be > 0") "negative lr, as written"
            Expect.exists errs (fun e -> e.Contains "data.validation_fraction: 1.5 must be in [0, 1)") "fraction"
        }
        test "a TOML syntax error names the file and the position" {
            let errs = errorsOf "[run]\nseed = = 3\n" []
            Expect.stringContains errs.Head "bad.toml: (syntax): (2," "line 2"
        }
        test "--set overrides a key with a TOML value and is validated like the file" {
            let c = ConfigLoader.Parse("[optimizer]\nlr = 0.1\n", "ok.toml", [ "optimizer.lr=3e-4"; "model.hidden=[8, 4]"; "run.name=probe" ])
            Expect.equal c.Optimizer.Lr 3e-4 "lr overridden"
            Expect.equal (c.Model.Options :?> Research.Core.Models.Kinds.MlpOptions).Hidden [| 8; 4 |] "array value"
            Expect.equal c.Run.Name "probe" "a bare word is a string"
            let errs = errorsOf "" [ "optimizer.beta3=0.5" ]
            Expect.stringContains errs.Head "optimizer.beta3: unknown key" "unknown override key"
        }
        test "defaults are what a researcher expects: AdamW, lr 1e-3, wd 0.01 on rank ≥ 2, 10% validation, constant schedule" {
            let c = ConfigLoader.Parse("", "empty.toml")
            Expect.equal (c.Optimizer.Name, c.Optimizer.Lr, c.Optimizer.WeightDecay) ("adamw", 1e-3, 0.01) "optimizer"
            Expect.equal c.Data.ValidationFraction 0.1 "validation"
            Expect.equal c.Schedule.Name "constant" "schedule"
        }
        test "a plugin's options are bound from its table; an unknown option names the key and the plugin's keys" {
            let host = PluginHost.Load([])
            let c2 = ConfigLoader.Parse("[schedule]\nname = \"cosine\"\nwarmup_steps = 10\nfloor = 0.1\n", "s.toml")
            try
                host.Create<Research.Abstractions.ISchedule>(PluginRole.Schedule, c2.Schedule, c2.File) |> ignore
                failtest "accepted"
            with :? ConfigException as e ->
                Expect.stringContains e.Message "s.toml: schedule.floor: unknown key (known keys: min_lr_ratio, warmup_ratio, warmup_steps)" "named"
        }
        test "research train with an unknown key exits 2 and prints one line naming the key and the file, no stack trace" {
            let dir = tempDir "cfg"
            let path = syntheticConfig dir "[optimizer]\nlrr = 0.1\n"
            let r = research dir [ "train"; path ]
            Expect.equal r.ExitCode 2 "exit code"
            Expect.stringContains r.Err (sprintf "%s: optimizer.lrr: unknown key" path) "message"
            Expect.isFalse (r.Err.Contains "   at ") "no stack trace"
            Expect.isFalse (Directory.Exists(Path.Combine(dir, "runs"))) "nothing was started"
        }
        test "every declared bound is the binder's: for each bounded number of every section, model kind and built-in plugin, the bound itself is accepted when inclusive and the nearest value outside is refused naming the key" {
            let host = Research.Core.Plugins.PluginHost.Load([])
            let tables =
                [ for name, t in ConfigLoader.SectionTypes -> name, t
                  for s in Research.Core.Data.DataSources.BuiltIn -> "data", s.OptionsType
                  for k in Research.Core.Models.ModelKinds.BuiltIn -> "model", k.OptionsType
                  for p in host.Plugins do if not (isNull p.OptionsType) then yield p.Name, p.OptionsType ]
            let mutable checkedBounds = 0
            for name, t in tables do
                for spec in OptionSchema.Of t do
                    if spec.IsNumber && not spec.Type.IsArray && not (isNull spec.Rule) then
                        let struct (lo, loEx, hi, hiEx) = spec.Bounds
                        let text (v: float) = if spec.IsInteger then sprintf "%.0f" v else v.ToString("R", Globalization.CultureInfo.InvariantCulture)
                        let outside (bound: float) (up: bool) =
                            if spec.IsInteger then (if up then bound + 1.0 else bound - 1.0)
                            else (if up then Math.BitIncrement bound else Math.BitDecrement bound)
                        let bind (v: float) =
                            let table = Tomlyn.TomlSerializer.Deserialize<Tomlyn.Model.TomlTable>(sprintf "%s = %s" spec.Key (text v))
                            try OptionsBinder.Bind(t, table, "schema.toml", name, "name") |> ignore; None
                            with :? ConfigException as e -> Some (e.Errors |> Seq.map string |> String.concat "; ")
                        for bound, exclusive, up in [ lo, loEx, false; hi, hiEx, true ] do
                            if Math.Abs bound < 1e15 then
                                checkedBounds <- checkedBounds + 1
                                // On an inclusive bound the range holds (a rule between options, e.g. ewc's gamma needing
                                // mode = "online", may still speak).
                                if not exclusive then
                                    match bind bound with
                                    | Some err when err.Split("; ") |> Array.exists (fun e -> e.Contains(sprintf "%s.%s:" name spec.Key) && e.Contains spec.Accepts) -> failtestf "%s.%s = %s is on an inclusive bound: %s" name spec.Key (text bound) err
                                    | _ -> ()
                                let v = if exclusive then bound else outside bound up
                                match bind v with
                                | Some err -> Expect.stringContains err (sprintf "%s.%s" name spec.Key) "names the key"
                                | None -> failtestf "%s.%s = %s is outside %s but was accepted" name spec.Key (text v) spec.Accepts
            Expect.isGreaterThan checkedBounds 60 "the bounds of the core and the built-in plugins were all tried"
        }
        test "research config schema prints every section and built-in plugin with types, defaults and accepted values; --json is the same schema as data" {
            let dir = tempDir "schema"
            let r = research dir [ "config"; "schema" ]
            Expect.equal r.ExitCode 0 r.Err
            for header in [ "[run]"; "[data]"; "[model]"; "[optimizer]"; "[[optimizer.components]]"; "[precision]"; "[train]"; "[checkpoint]"; "[study]"; "[plugins]"
                            "[schedule] name = \"cosine\""; "[[methods]] name = \"ewc\""; "[[metrics]] name = \"bwt\"" ] do
                Expect.stringContains r.Out header header
            Expect.stringContains r.Out "call_timeout_s" "the watchdog's option"
            let lr = r.Out.Split('\n') |> Array.find (fun l -> l.TrimStart().StartsWith "lr " && l.Contains "0.001")
            Expect.stringContains lr "> 0" "optimizer.lr: its declared range"
            Expect.stringContains r.Out "added in 2.2: at its default, not part of a run's identity" "an option added later, declared"
            let json = research dir [ "config"; "schema"; "--json"; "optimizer" ]
            Expect.equal json.ExitCode 0 json.Err
            let doc = Text.Json.JsonDocument.Parse json.Out
            let lrJson = doc.RootElement.EnumerateArray() |> Seq.find (fun e -> e.GetProperty("table").GetString() = "[optimizer]" && e.GetProperty("key").GetString() = "lr")
            Expect.equal (lrJson.GetProperty("min").GetDouble()) 0.0 "min"
            Expect.isTrue (lrJson.GetProperty("min_exclusive").GetBoolean()) "exclusive"
            let bad = research dir [ "config"; "schema"; "optimiser" ]
            Expect.equal bad.ExitCode 2 "an unknown section is a usage error"
            Expect.stringContains bad.Err "no section or plugin 'optimiser'" "named"
        }
        test "ConfigValue writes a value as a config file writes it: enums in kebab case, TOML numbers, options records as inline tables keyed in snake case" {
            for value, text in [ box Anchor.PreviousTask, "\"previous-task\""; box 3, "3"; box 3L, "3"; box 1.0, "1.0"; box 0.001, "0.001"
                                 box true, "true"; box "a\"b", "\"a\\\"b\""; box [| 256; 256 |], "[256, 256]"; box [| "x" |], "[\"x\"]"
                                 box (Array.empty<int>), "[]"; null, "(none)" ] do
                Expect.equal (ConfigValue.Text value) text (sprintf "%A" value)
            let hessian = ConfigValue.Text(HessianSection(Samples = 500, Fisher = [| Research.Abstractions.FisherKind.Exact |]))
            Expect.stringStarts hessian "{" "an inline table"
            for part in [ "samples = 500"; "top_k = 20"; "fisher = [\"exact\"]"; "tolerance = 0.001" ] do Expect.stringContains hessian part part
            Expect.equal ((ConfigValue.Json Anchor.PreviousTask).ToJsonString()) "\"previous-task\"" "the canonical config spells it alike"
            Expect.equal ((ConfigValue.Json 3).ToJsonString()) "3" "an int as a 64-bit integer"
            let table = Tomlyn.TomlSerializer.Deserialize<Tomlyn.Model.TomlTable>("v = { b = 2, a = [1.5] }")["v"]
            Expect.equal (ConfigValue.Text table) "{b = 2, a = [1.5]}" "a value as TOML read it, as it was written"
        }
        test "every default of every section, built-in data source and built-in plugin, written by ConfigValue.Text, reads back through the binder as the same value" {
            let host = Research.Core.Plugins.PluginHost.Load([])
            let types =
                [ for _, t in ConfigLoader.SectionTypes -> t
                  for s in Research.Core.Data.DataSources.BuiltIn -> s.OptionsType
                  for p in host.Plugins do if not (isNull p.OptionsType) then yield p.OptionsType ]
            let mutable n = 0
            for t in types do
                for spec in OptionSchema.Of t do
                    let text = ConfigValue.Text spec.Default
                    let value = Tomlyn.TomlSerializer.Deserialize<Tomlyn.Model.TomlTable>(sprintf "%s = %s" spec.Key text)[spec.Key]
                    // The binder's own conversion (one option alone: an options type may refuse its defaults together).
                    let back =
                        match value with
                        | :? Tomlyn.Model.TomlTable as nested -> OptionsBinder.Bind(spec.Type, nested, "defaults.toml", spec.Key)
                        | _ ->
                            let ok, converted, why = OptionsBinder.TryConvert(value, spec.Type)
                            if not ok then failtestf "%s.%s = %s does not read back: %s" t.Name spec.Key text why
                            converted
                    Expect.equal ((ConfigValue.Json back).ToJsonString()) ((ConfigValue.Json spec.Default).ToJsonString()) (sprintf "%s.%s = %s" t.Name spec.Key text)
                    n <- n + 1
            Expect.isGreaterThan n 150 "the options of the core and the built-in plugins were all written and read"
        }
        test "research plugins list prints each option's default as a config writes it (an enum in kebab case, a float with its point)" {
            let r = research (tempDir "plugins-list") [ "plugins"; "list" ]
            Expect.equal r.ExitCode 0 r.Err
            Expect.stringContains r.Out "decay_shape = \"linear\"" "warmup-stable-decay's enum"
            Expect.stringContains r.Out "anchor = \"initial\"" "l2-sp's enum"
            Expect.stringContains r.Out "cycle_mult = 1.0" "a float that is whole keeps its point, as TOML reads it back"
        }
        test "cosine-restarts without cycle_steps or cycles is refused by research train, exit 2, naming the key" {
            let dir = tempDir "cfg-default"
            let path = syntheticConfig dir "[schedule]\nname = \"cosine-restarts\"\n"
            let r = research dir [ "train"; path; "--dry-run" ]
            Expect.equal r.ExitCode 2 r.Err
            Expect.stringContains r.Err "schedule.cycle_steps: 0 with cycles = 0 sets no cycle" "names the key and the rule"
        }
    ]
