namespace ResearchPlugin1

open Research.Abstractions

/// <summary>
/// The largest forgetting of any task: max over j &lt; T − 1 of (max over l &lt; T − 1 of R[l][j]) − R[T − 1][j], the
/// worst case of Chaudhry et al. 2018's forgetting measure (which averages it). A metric is a pure function of the
/// study's evaluation record: R[i][j] is the accuracy on task j after training task i. PerTask holds each task's drop.
/// Choose it in a study config:
/// <code>[[metrics]]
/// name = "research-plugin-1"</code>
/// </summary>
[<Plugin("research-plugin-1", Summary = "the largest drop of any task from its best accuracy to its final one")>]
type Plugin() =
    interface IForgettingMetric with
        member _.Compute(record) =
            let r = record.Accuracy
            let last = r.Length - 1
            let drops = [| for j in 0 .. last - 1 -> (seq { for l in j .. last - 1 -> r[l][j] } |> Seq.max) - r[last][j] |]
            // One task forgets nothing.
            MetricValue((if drops.Length = 0 then 0.0 else Array.max drops), drops)
