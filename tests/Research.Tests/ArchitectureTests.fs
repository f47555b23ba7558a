/// The shape of the house, held by tests: Core's folders form no cycle, and Core is a library (no console, no
/// plotting, no terminal widgets). ArchUnitNET reads the compiled assembly's IL, so a dependency hidden in a method
/// body counts as much as one in a signature.
module Research.Tests.ArchitectureTests

open System
open Expecto
open ArchUnitNET.Loader
open ArchUnitNET.Fluent.Slices

let private core = typeof<Research.Core.Tracking.RunStore>.Assembly

let private architecture = lazy (ArchLoader().LoadAssemblies(core).Build())

/// A type's namespace ("" for a type ArchUnitNET knows only by reference).
let private ns (t: ArchUnitNET.Domain.IType) = if isNull t || isNull t.Namespace then "" else t.Namespace.FullName

/// The namespaces Research.Core.X (the folders) a type of namespace `from` refers to, by type dependency.
let private edges () =
    let folder (ns: string) =
        if ns.StartsWith "Research.Core." then Some(ns.Split('.').[2]) else None
    [ for t in architecture.Value.Types do
        match folder (ns t) with
        | Some a ->
            for d in t.Dependencies do
                match folder (ns d.Target) with
                | Some b when a <> b -> yield a, b, t.FullName, d.Target.FullName
                | _ -> ()
        | None -> () ]

let tests =
    testList "architecture" [
        test "Core's folders (namespaces Research.Core.X, a subfolder part of its folder) form no dependency cycle" {
            let rule = SliceRuleDefinition.Slices().Matching("Research.Core.(*)..").Should().BeFreeOfCycles()
            let failures = rule.Evaluate(architecture.Value) |> Seq.filter (fun r -> not r.Passed) |> Seq.map (fun r -> r.Description) |> Seq.toList
            // ArchUnitNET's description names each cycle and the type pairs of each of its edges.
            if not failures.IsEmpty then failtestf "cycles between Core's folders:\n%s" (String.Join("\n", failures))
        }

        test "Core references neither Spectre.Console nor ScottPlot, and no type of it uses System.Console" {
            let referenced = core.GetReferencedAssemblies() |> Array.map (fun a -> a.Name) |> Set.ofArray
            Expect.isFalse (referenced.Contains "Spectre.Console") "Research.Core references Spectre.Console"
            Expect.isFalse (referenced.Contains "ScottPlot") "Research.Core references ScottPlot"
            let console =
                [ for t in architecture.Value.Types do
                    if (ns t).StartsWith "Research.Core" then
                        for d in t.Dependencies do
                            if not (isNull d.Target) && d.Target.FullName = "System.Console" then yield t.FullName ]
                |> List.distinct
            Expect.isEmpty console "types of Research.Core that use System.Console"
        }

        test "the analysis is not vacuous: it sees Core's types and a known edge between two of its folders (Training uses Tracking)" {
            let types = architecture.Value.Types |> Seq.filter (fun t -> (ns t).StartsWith "Research.Core.") |> Seq.length
            Expect.isGreaterThan types 100 "Core's types, as ArchUnitNET loaded them"
            Expect.isTrue (edges () |> List.exists (fun (a, b, _, _) -> a = "Training" && b = "Tracking")) "the loop writes the run store"
        }
    ]
