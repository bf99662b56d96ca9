# A workflow whose step `stats` runs a subworkflow ($graph entry #stats): its DAG shows it as
# the task group stats (stats.sort, stats.count). `sort` reads $TWIN, which only the main
# workflow's EnvVarRequirement sets: the group's steps inherit it, as inside the whole workflow.
# `shout` runs only when factor > 10 (`when`): with the default 3 its task is skipped.
cwlVersion: v1.2
$graph:
- id: main
  class: Workflow
  requirements:
    SubworkflowFeatureRequirement: {}
    EnvVarRequirement: {envDef: {TWIN: drought}}
    InlineJavascriptRequirement: {}
  inputs:
    text: {type: string, default: "b\na\nc"}
    factor: {type: int, default: 3}
  outputs:
    sorted: {type: File, outputSource: stats/sorted}
    lines: {type: int, outputSource: stats/lines}
    report: {type: File, outputSource: report/out}
    shouted: {type: File?, outputSource: shout/out}
  steps:
    write:
      run: "#write"
      in: {text: text}
      out: [out]
    stats:
      run: "#stats"
      in: {infile: write/out, factor: factor}
      out: [sorted, lines]
    report:
      run: "#report"
      in: {infile: stats/sorted}
      out: [out]
    shout:
      run: "#report"
      when: $(inputs.factor > 10)
      in: {infile: stats/sorted, factor: factor}
      out: [out]
- id: stats
  class: Workflow
  requirements: {InlineJavascriptRequirement: {}}
  inputs:
    infile: File
    factor: int
  outputs:
    sorted: {type: File, outputSource: sort/out}
    lines: {type: int, outputSource: count/n}
  steps:
    sort:
      run: "#sort"
      in: {infile: infile}
      out: [out]
    count:
      run: "#count"
      in: {infile: sort/out, factor: factor}
      out: [n]
- id: write
  class: CommandLineTool
  baseCommand: [printf, "%s\n"]
  inputs: {text: {type: string, inputBinding: {position: 1}}}
  stdout: text.txt
  outputs: {out: stdout}
- id: sort
  class: CommandLineTool
  baseCommand: [sh, -c, 'sort "$0" && echo "$TWIN"']
  inputs: {infile: {type: File, inputBinding: {position: 1}}}
  stdout: sorted.txt
  outputs: {out: stdout}
- id: count
  class: ExpressionTool
  requirements: {InlineJavascriptRequirement: {}}
  inputs:
    infile: {type: File, loadContents: true}
    factor: int
  outputs: {n: int}
  expression: '$({"n": inputs.infile.contents.split("\n").filter(function(l){return l.length > 0}).length * inputs.factor})'
- id: report
  class: CommandLineTool
  baseCommand: [wc, -l]
  inputs: {infile: File}
  stdin: $(inputs.infile.path)
  stdout: report.txt
  outputs: {out: stdout}
