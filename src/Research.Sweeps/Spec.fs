/// What a sweep script writes: a sweep is arms (a base config plus fixed overrides) times axes (grid, random with a
/// seed, zipped) times seeds. This file is all a script needs; it depends on nothing but FSharp.Core and the BCL, so
/// `dotnet fsi` loads it without the rest of the framework.
namespace Research.Sweeps

open System
open System.Globalization
open System.IO
open System.Text.Json

/// One setting of an axis: a label for tables and plots, its number when it has one (for plots), and the config
/// overrides it stands for (key, TOML value text).
type Level = { Label: string; Number: float option; Overrides: (string * string) list }

/// A named dimension of the sweep: its levels.
type Axis = { Name: string; Levels: Level list }

/// What each trial runs: `research train` (one training run) or `research study` (a task sequence).
type Command =
    | Train
    | Study

/// A base config, overrides common to its trials, and the axes crossed over them (a grid: every combination).
type Arm =
    { Name: string
      Config: string
      Overrides: (string * string) list
      Axes: Axis list
      /// The command of this arm's trials when it is not the sweep's (`Arm.command`).
      Command: Command option
      /// The arm whose same-seed trial's final weights every trial starts from (`Arm.from`).
      From: string option
      /// The config key those weights go to (`Arm.fromInto`); None: `model.init_from`.
      FromKey: string option }

/// How a summary reads the trials: one metric, grouped by everything but the seed; plotted against an axis.
type SummarySpec =
    { /// A study metric (average-accuracy, average-forgetting, bwt, …), or the last value of a training run's
      /// evaluation as val_accuracy, test_accuracy, val_loss, test_loss.
      Metric: string
      /// The axis drawn on x (arms without it are drawn as horizontal baselines); None for a table only.
      Against: string option
      /// Draw x on a log scale (for λ spanning decades).
      LogX: bool
      /// Report each group's difference to this arm instead, paired by seed (the same seed: the same data order,
      /// split and initialisation), with its own interval: tighter than comparing two intervals when seeds matter.
      PairedWith: string option }

type Sweep =
    { Name: string
      Command: Command
      Arms: Arm list
      Seeds: int list
      /// Threads per trial (torch intra-op threads, and Slurm's --cpus-per-task).
      Threads: int
      /// Plugin folders passed to every trial (besides the built-in ones).
      Plugins: string list
      Summaries: SummarySpec list
      /// Where the sweep's store, trials and summaries go; default runs/sweeps/<name>.
      OutputDir: string option
      /// Extra `sbatch` options for the Slurm executor: partition, time limit, account, memory, …
      Sbatch: string list }

/// A TOML inline table, `{ name = "ewc", lambda = 30.0 }`: `Toml.table [ "name", box "ewc"; "lambda", box 30.0 ]`.
type InlineTable = InlineTable of (string * objnull) list

/// TOML value text for override values.
module Toml =
    let table (entries: (string * objnull) list) = InlineTable entries

    let rec value (v: objnull) : string =
        match v with
        | :? InlineTable as t ->
            let (InlineTable entries) = t
            "{ " + String.Join(", ", [ for (k, x) in entries -> k + " = " + value x ]) + " }"
        | :? string as s -> "\"" + s.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\""
        | :? bool as b -> if b then "true" else "false"
        | :? int as i -> string i
        | :? int64 as i -> string i
        | :? float as f ->
            // A float keeps a decimal point or exponent, so TOML reads it as a float and not an integer.
            if Double.IsNaN f then "nan"
            elif Double.IsPositiveInfinity f then "inf"
            elif Double.IsNegativeInfinity f then "-inf"
            else
                let r = f.ToString("R", CultureInfo.InvariantCulture)
                if r.Contains '.' || r.Contains 'E' then r.Replace("E", "e") else r + ".0"
        | :? float32 as f -> value (float f)
        | :? Collections.IEnumerable as xs -> "[" + String.Join(", ", [ for x in xs -> value x ]) + "]"
        | null -> invalidArg "v" "no TOML form for null"
        | _ -> invalidArg "v" (sprintf "no TOML form for %A (%s)" v (v.GetType().Name))

    let number (v: objnull) : float option =
        match v with
        | :? int as i -> Some(float i)
        | :? int64 as i -> Some(float i)
        | :? float as f -> Some f
        | :? float32 as f -> Some(float f)
        | _ -> None

    let label (v: objnull) : string =
        match v with
        | :? string as s -> s
        | :? float as f -> f.ToString("G6", CultureInfo.InvariantCulture)
        | _ -> (value v).Trim('"')

module Axis =
    /// One config key, one level per value: `Axis.grid "methods.0.lambda" [10.0; 30.0; 100.0]`.
    let grid (key: string) (values: 'T list) : Axis =
        { Name = key
          Levels = [ for v in values -> { Label = Toml.label (box v); Number = Toml.number (box v); Overrides = [ key, Toml.value (box v) ] } ] }

    /// Named levels that each set several keys: `Axis.choice "method" [ "ewc", [ "methods.0.lambda", box 30.0 ] ]`.
    let choice (name: string) (levels: (string * (string * objnull) list) list) : Axis =
        { Name = name
          Levels = [ for (label, sets) in levels -> { Label = label; Number = None; Overrides = [ for (k, v) in sets -> k, Toml.value v ] } ] }

    /// `count` values drawn from `sample` with a generator seeded by `seed` (the same script gives the same trials).
    /// Log-uniform: `Axis.random "lr" "optimizer.lr" 4 7 (Sample.logUniform 1e-4 1e-2)`.
    let random (key: string) (count: int) (seed: int) (sample: Random -> 'T) : Axis =
        let rng = Random seed
        let axis = grid key [ for _ in 1..count -> sample rng ]
        // Summaries group by label: labels must stay distinct where 6 significant digits would merge two draws.
        if axis.Levels |> List.distinctBy (fun l -> l.Label) |> List.length = count then axis
        else { axis with Levels = [ for l in axis.Levels -> { l with Label = (List.head l.Overrides |> snd).Trim('"') } ] }

    /// Axes varied together, level i with level i (all of the same length): e.g. a learning rate with its warmup.
    let zip (name: string) (axes: Axis list) : Axis =
        match axes |> List.map (fun a -> a.Levels.Length) |> List.distinct with
        | [ _ ] ->
            { Name = name
              Levels =
                axes
                |> List.map (fun a -> a.Levels)
                |> List.transpose
                |> List.map (fun ls ->
                    { Label = ls |> List.map (fun l -> l.Label) |> String.concat "/"
                      Number = (List.head ls).Number
                      Overrides = ls |> List.collect (fun l -> l.Overrides) }) }
        | lengths -> invalidArg "axes" (sprintf "Axis.zip %s: the axes have different numbers of levels %A" name lengths)

module Sample =
    let uniform (lo: float) (hi: float) (rng: Random) = lo + (hi - lo) * rng.NextDouble()
    let logUniform (lo: float) (hi: float) (rng: Random) = exp (log lo + (log hi - log lo) * rng.NextDouble())
    let choice (xs: 'T list) (rng: Random) = xs.[rng.Next xs.Length]

module Arm =
    let create name config = { Name = name; Config = config; Overrides = []; Axes = []; Command = None; From = None; FromKey = None }
    let set (key: string) (v: objnull) (arm: Arm) = { arm with Overrides = arm.Overrides @ [ key, Toml.value v ] }
    let axis (a: Axis) (arm: Arm) = { arm with Axes = arm.Axes @ [ a ] }
    /// Replaces the config's [[methods]] tables: `Arm.methods [ [ "name", box "ewc"; "lambda", box 30.0 ] ]`.
    let methods (tables: (string * objnull) list list) (arm: Arm) = set "methods" (box [ for t in tables -> Toml.table t ]) arm
    /// Runs this arm's trials with another command than the sweep's: `Arm.command Train` for the pre-training arm of a
    /// study sweep.
    let command (c: Command) (arm: Arm) = { arm with Command = Some c }
    /// Starts every trial of this arm from the final weights of the trial of arm `source` with the same seed (its
    /// `model.init_from`), once that trial has finished: `Arm.from "pretrain"`. The source arm has no axes (one trial per
    /// seed); its trial's identity is part of this arm's trials' identities, so a source run again with another config
    /// runs its dependents again too.
    let from (source: string) (arm: Arm) = { arm with From = Some source }
    /// As `from`, with the source's final weights given to another key than `model.init_from`: a part of the model
    /// (`Arm.fromInto "lm" "model.language_model_init_from"` starts a VLM's language model from a pre-trained one).
    let fromInto (source: string) (key: string) (arm: Arm) = { arm with From = Some source; FromKey = Some key }

/// One trial as the driver receives it: the arm, a label per axis, the seed, the config and its overrides; its command
/// and the arm it starts from (null: none). Specs written before arms had these read them as null: the sweep's command,
/// no source.
type TrialSpec =
    { Arm: string
      Labels: string[][]
      Numbers: Nullable<float>[]
      Seed: int
      Config: string
      Overrides: string[]
      Command: string
      From: string | null
      /// The key the source's weights go to (null: `model.init_from`).
      FromKey: string | null }

type SweepSpec =
    { Name: string
      Command: string
      Threads: int
      Plugins: string[]
      Sbatch: string[]
      OutputDir: string
      Summaries: SummarySpec[]
      Trials: TrialSpec[] }

/// A summary whose metric is `curve:KEY` draws the logged metric KEY against the step instead of a table.
module Curve =
    [<Literal>]
    let Prefix = "curve:"

/// A summary whose metric is `probe:EXPR` reads a study's probes (Research.Abstractions.ProbeNames) of task pairs, the
/// T × T matrices whose cell (i, j) is task j at the end of a later task i: `probe:A` is the mean of A's cells with j < i
/// (the one cell of a 2-task study), `probe:A / B` the mean of the cell-by-cell ratios A[i][j] / B[i][j] (the spaces
/// around the slash mark the ratio: probe names hold slashes, as in fisher_quadratic_loss_increase/exact).
module Probe =
    [<Literal>]
    let Prefix = "probe:"

/// A summary whose metric is `log:PLUGIN/NAME` reads the last value a plugin logged; `curve:log:PLUGIN/NAME` draws it
/// against the step.
module Log =
    [<Literal>]
    let Prefix = "log:"

    /// The store's key of a summary's metric: `log:PLUGIN/NAME` names what a plugin logged (Research.Abstractions.IRunLog),
    /// stored under plugin/PLUGIN/NAME; any other name is the key itself.
    let key (metric: string) = if metric.StartsWith Prefix then "plugin/" + metric.Substring Prefix.Length else metric

/// A summary whose metric is `along:EXPR` reads the points inside later tasks ([study] hessian snapshots_along): EXPR
/// names probes under hessian_along/ (`predicted / measured`, `fisher_exact / quadratic`, `measured`); each point is
/// summarised over seeds and drawn against the fraction of the task trained, one plot per arm.
module Along =
    [<Literal>]
    let Prefix = "along:"

    /// The axis of the points: the fraction of the later task's steps trained.
    [<Literal>]
    let Axis = "fraction of the task"

module Command =
    /// The `research` subcommand.
    let name (c: Command) = match c with Train -> "train" | Study -> "study"

module Sweep =
    let create (name: string) (command: Command) =
        { Name = name; Command = command; Arms = []; Seeds = [ 1 ]; Threads = 1; Plugins = []; Summaries = []; OutputDir = None; Sbatch = [] }

    let arm (a: Arm) (s: Sweep) = { s with Arms = s.Arms @ [ a ] }
    let seeds (xs: int list) (s: Sweep) = { s with Seeds = xs }
    let threads (n: int) (s: Sweep) = { s with Threads = n }
    let plugins (dir: string) (s: Sweep) = { s with Plugins = s.Plugins @ [ dir ] }
    let output (dir: string) (s: Sweep) = { s with OutputDir = Some dir }
    /// `Sweep.sbatch [ "--partition=cpu"; "--time=02:00:00" ]`: passed to sbatch as they are.
    let sbatch (options: string list) (s: Sweep) = { s with Sbatch = s.Sbatch @ options }

    let summarize (metric: string) (against: string option) (logX: bool) (s: Sweep) =
        { s with Summaries = s.Summaries @ [ { Metric = metric; Against = against; LogX = logX; PairedWith = None } ] }

    /// A logged metric (`task0_val_perplexity`, `train_loss`, …) against the step, the mean over seeds per group, drawn as
    /// `curves-KEY.png` beside the tables (train_loss is always drawn).
    let curve (key: string) (s: Sweep) =
        { s with Summaries = s.Summaries @ [ { Metric = Curve.Prefix + key; Against = None; LogX = false; PairedWith = None } ] }

    /// A study probe of task pairs as a metric (`Probe`): `Sweep.probe "predicted_loss_increase / measured_loss_increase"
    /// (Some "optimizer.lr") true` tables the quadratic model's ratio to the measured increase and plots it against lr.
    let probe (expr: string) (against: string option) (logX: bool) (s: Sweep) = summarize (Probe.Prefix + expr) against logX s

    /// The points inside later tasks against the fraction trained (`Along`): `Sweep.along "predicted / measured"`.
    let along (expr: string) (s: Sweep) =
        { s with Summaries = s.Summaries @ [ { Metric = Along.Prefix + expr; Against = None; LogX = false; PairedWith = None } ] }

    /// The metric of each group minus that of `baseline` (an arm) with the same seed: mean ± 95% CI of the differences.
    let paired (metric: string) (baseline: string) (s: Sweep) =
        { s with Summaries = s.Summaries @ [ { Metric = metric; Against = None; LogX = false; PairedWith = Some baseline } ] }

    /// Every trial: for each arm, the product of its axes' levels, times the seeds. Paths become absolute (relative
    /// to the working directory).
    let expand (s: Sweep) : SweepSpec =
        if String.IsNullOrWhiteSpace s.Name || s.Name.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0 || s.Name.Contains ' ' then
            invalidArg "Name" (sprintf "sweep name '%s' must be a non-empty file name without spaces" s.Name)
        if s.Threads < 1 then invalidArg "Threads" "threads per trial must be at least 1"
        if s.Arms.IsEmpty then invalidArg "Arms" "a sweep needs at least one arm"
        if s.Seeds.IsEmpty then invalidArg "Seeds" "a sweep needs at least one seed"
        match s.Arms |> List.countBy (fun a -> a.Name) |> List.filter (fun (_, n) -> n > 1) with
        | (dup, _) :: _ -> invalidArg "Arms" (sprintf "two arms are named '%s'" dup)
        | [] -> ()
        for summary in s.Summaries do
            match summary.PairedWith with
            | Some b when not (s.Arms |> List.exists (fun a -> a.Name = b)) -> invalidArg "Summaries" (sprintf "Sweep.paired: no arm is named '%s'" b)
            | _ -> ()
        let rec product (axes: Axis list) : (Axis * Level) list list =
            match axes with
            | [] -> [ [] ]
            | a :: rest -> [ for l in a.Levels do for tail in product rest -> (a, l) :: tail ]
        let trials =
            [| for arm in s.Arms do
                   for combo in product arm.Axes do
                       for seed in s.Seeds ->
                           { Arm = arm.Name
                             Labels = [| for (a, l) in combo -> [| a.Name; l.Label |] |]
                             Numbers = [| for (_, l) in combo -> Option.toNullable l.Number |]
                             Seed = seed
                             Config = Path.GetFullPath arm.Config
                             Overrides =
                               [| for (k, v) in arm.Overrides @ List.collect (fun (_, l: Level) -> l.Overrides) combo do yield k + "=" + v
                                  yield sprintf "run.seed=%d" seed |]
                             Command = Command.name (defaultArg arm.Command s.Command)
                             From = Option.toObj arm.From
                             FromKey = Option.toObj arm.FromKey } |]
        { Name = s.Name
          Command = Command.name s.Command
          Threads = s.Threads
          Plugins = s.Plugins |> List.map Path.GetFullPath |> Array.ofList
          Sbatch = Array.ofList s.Sbatch
          OutputDir = Path.GetFullPath(defaultArg s.OutputDir (Path.Combine("runs", "sweeps", s.Name)))
          Summaries = Array.ofList s.Summaries
          Trials = trials }

    /// The environment variable through which `research sweep` asks a script for its trials.
    [<Literal>]
    let SpecVariable = "RESEARCH_SWEEP_SPEC"

    /// The variable `research sweep --dry-run` sets while it reads a script.
    [<Literal>]
    let DryRunVariable = "RESEARCH_SWEEP_DRY_RUN"

    /// True while `research sweep --dry-run` reads the script: a script that writes files its trials read (an
    /// instruction set built from a corpus, say) skips that then, as a dry run writes nothing. Configs are checked
    /// without reading data files, so its trials still check.
    let isDryRun () = Environment.GetEnvironmentVariable DryRunVariable = "1"

    /// The end of every sweep script: `Sweep.run fsi.CommandLineArgs sweep`. Under `research sweep` it hands the
    /// trials over as JSON; run directly (`dotnet fsi SCRIPT.fsx --executor slurm`) it starts `research sweep` on
    /// itself with the same arguments, found beside this library. Returns the exit code for `exit`.
    let run (argv: string[]) (s: Sweep) : int =
        let spec = expand s
        match Environment.GetEnvironmentVariable SpecVariable with
        | null
        | "" ->
            // Beside this library (the script's #r), not beside `dotnet fsi`.
            let here = match Path.GetDirectoryName(typeof<Level>.Assembly.Location) with | null -> "." | d -> d
            let research = Path.Combine(here, "research")
            if not (File.Exists research) then
                eprintfn "error: %s not found: build the command beside this library (./build.sh)" research
                2
            else
                let psi = Diagnostics.ProcessStartInfo(research)
                psi.ArgumentList.Add "sweep"
                for a in argv do psi.ArgumentList.Add a
                match Diagnostics.Process.Start psi with
                | null -> eprintfn "error: %s did not start" research; 2
                | p ->
                    use p = p
                    p.WaitForExit()
                    p.ExitCode
        | path ->
            File.WriteAllText(path, JsonSerializer.Serialize(spec, JsonSerializerOptions(WriteIndented = true)))
            0
