cwlVersion: v1.2
class: CommandLineTool
requirements:
  DockerRequirement:
    dockerPull: docker.io/library/debian:12
baseCommand: echo
stdout: said.txt
inputs:
  msg: {type: string, inputBinding: {position: 1}}
outputs:
  said: {type: stdout}
