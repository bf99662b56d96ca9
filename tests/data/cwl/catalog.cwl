cwlVersion: v1.2
class: Workflow
label: catalog
doc: Writes a small catalog folder, then counts the lines of its items.
requirements:
  InlineJavascriptRequirement: {}
inputs:
  title:
    type: string
    default: alps
  items:
    type: int
    default: 3
outputs:
  catalog:
    type: Directory
    outputSource: make/catalog
  lines:
    type: int
    outputSource: count/lines
steps:
  make:
    run:
      class: CommandLineTool
      hints:
        DockerRequirement:
          dockerPull: docker.io/library/bash:5.2
      baseCommand: [bash, -c]
      arguments:
        - valueFrom: |
            mkdir -p catalog && for i in `seq 1 $(inputs.items)`; do echo "$(inputs.title) $i" > catalog/item$i.txt; done
      inputs:
        title: string
        items: int
      outputs:
        catalog:
          type: Directory
          outputBinding: {glob: catalog}
    in:
      title: title
      items: items
    out: [catalog]
  count:
    run:
      class: CommandLineTool
      baseCommand: [sh, -c, 'cat "$0"/*.txt | wc -l > lines.txt']
      inputs:
        dir:
          type: Directory
          inputBinding: {position: 1}
      outputs:
        lines:
          type: int
          outputBinding:
            glob: lines.txt
            loadContents: true
            outputEval: $(parseInt(self[0].contents))
    in:
      dir: make/catalog
    out: [lines]
