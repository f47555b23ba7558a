/// Arms that start from another arm's result (`Arm.from`): which trial each trial starts from, the checks that make
/// that well defined (the source arm exists, has one trial per seed, and no chain of arms loops), and an order in which
/// every source comes before its dependents (a dependent's identity includes its source's).
module Research.Sweeps.Dependencies

open System

/// The source arm of a trial, if it has one (specs of earlier versions carry null).
let sourceArm (t: TrialSpec) = match t.From with | null | "" -> None | from -> Some from

/// The key a dependent trial's source weights go to (`Arm.fromInto`; `model.init_from` by default).
let fromKey (t: TrialSpec) = match t.FromKey with | null | "" -> "model.init_from" | key -> key

/// For trials in the order of the sweep: the indices in an order where each source precedes its dependents, and for
/// each trial the index of its source trial (the source arm's trial with the same seed). Error: the problems, a line
/// each, naming the arms.
let plan (trials: TrialSpec[]) : Result<int list * int option[], string list> =
    let arms = trials |> Array.map (fun t -> t.Arm) |> Array.distinct
    let fromOf = dict [ for t in trials -> t.Arm, sourceArm t ]
    let problems =
        [ for arm in arms do
              match fromOf[arm] with
              | None -> ()
              | Some src when not (fromOf.ContainsKey src) ->
                  yield sprintf "arm '%s' starts from arm '%s' (Arm.from), and the sweep has no arm '%s'" arm src src
              | Some src ->
                  let seeds = trials |> Array.filter (fun t -> t.Arm = arm) |> Array.map (fun t -> t.Seed) |> Array.distinct
                  let perSeed = [ for s in seeds -> s, trials |> Array.filter (fun t -> t.Arm = src && t.Seed = s) |> Array.length ]
                  match perSeed |> List.tryFind (fun (_, n) -> n <> 1) with
                  | Some(seed, n) ->
                      let axes = trials |> Array.tryFind (fun t -> t.Arm = src) |> Option.map (fun t -> [ for l in t.Labels -> l[0] ]) |> Option.defaultValue []
                      yield sprintf "arm '%s' starts from arm '%s' (Arm.from), which has %d trials for seed %d%s: a source arm needs exactly one trial per seed (no axes)"
                                arm src n seed (if axes.IsEmpty then "" else sprintf " (axes %s)" (String.Join(", ", axes)))
                  | None -> () ]
    // A chain that returns to an arm it passed has no first trial to run.
    let cycles =
        [ for arm in arms do
              let rec walk (path: string list) (a: string) =
                  match fromOf.TryGetValue a with
                  | true, Some next when List.contains next path -> Some(List.rev (next :: path))
                  | true, Some next -> walk (next :: path) next
                  | _ -> None
              match walk [ arm ] arm with
              // Each cycle once, from its smallest arm name.
              | Some chain when List.head chain = arm && arm = List.min (List.tail chain) ->
                  yield sprintf "arms %s start from each other in a cycle (Arm.from): none of them can run first" (String.Join(" → ", chain))
              | _ -> () ]
    match problems @ cycles with
    | [] ->
        let rec depth (arm: string) = match fromOf[arm] with None -> 0 | Some src -> 1 + depth src
        let order = [ 0 .. trials.Length - 1 ] |> List.sortBy (fun i -> depth trials[i].Arm) // stable: the sweep's order
        let source =
            trials |> Array.map (fun t -> sourceArm t |> Option.map (fun src -> trials |> Array.findIndex (fun s -> s.Arm = src && s.Seed = t.Seed)))
        Ok(order, source)
    | errors -> Error errors

/// The override a dependent trial's identity is computed with: the identity of its source trial where its
/// `model.init_from` will name that trial's final weights. The path exists only once the source has run (its run
/// folder is named by its start time) and would move with the sweep folder; the source's identity says what the
/// weights are, so a source run with another config gives its dependents other identities.
let identityOverride (t: TrialSpec) (sourceId: string) = fromKey t + "=" + Toml.value ("sweep-trial:" + sourceId)

/// The override a dependent trial runs with: its source's final weights.
let runOverride (t: TrialSpec) (weights: string) = fromKey t + "=" + Toml.value weights
